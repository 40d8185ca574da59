// MQTT.js (the browser dashboard's client library) against Roost over WebSocket:
// subscribe at QoS 2, publish at QoS 0, 1 and 2, print what arrived as JSON.
// Usage: node mqttjs-peer.mjs ws://127.0.0.1:PORT/mqtt
import mqtt from "mqtt";

const url = process.argv[2];
const topic = "iot/yanjo/sensor/livingroom/illuminate";
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail("timed out"), 60000);

const sub = await mqtt.connectAsync(url, { clientId: "mqttjs-sub", protocolVersion: 4 });
await sub.subscribeAsync("iot/+/sensor/#", { qos: 2 });
const got = [];
sub.on("message", (t, payload, packet) => {
  got.push([t, payload.toString(), packet.qos]);
  if (got.length === 3) {
    console.log(JSON.stringify(got));
    process.exit(0);
  }
});
const pub = await mqtt.connectAsync(url, { clientId: "mqttjs-pub", protocolVersion: 4 });
for (const qos of [0, 1, 2]) {
  await pub.publishAsync(topic, `${qos}00`, { qos });
}
