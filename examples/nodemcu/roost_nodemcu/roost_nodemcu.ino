// Roost example firmware: NodeMCU (ESP8266) + DHT11 on D7 + CdS photoresistor on A0.
//
// Every INTERVAL_MS it publishes three readings to Roost, exactly as `roost simulate` does:
//   iot/<OWNER>/sensor/<PLACE>/temperature   e.g. "23.0"  (°C, one decimal)
//   iot/<OWNER>/sensor/<PLACE>/humidity      e.g. "45"    (%RH, whole percent: DHT11 resolution)
//   iot/<OWNER>/sensor/<PLACE>/illuminate    e.g. "612"   (raw analogRead(A0), 0..1023)
// A failed DHT11 read (NaN) is skipped, not published as "nan".
// Wi-Fi and MQTT reconnect on their own, with a growing pause between MQTT attempts.
//
// Libraries (Arduino Library Manager): "PubSubClient" by Nick O'Leary, "DHT sensor library"
// by Adafruit (it pulls in "Adafruit Unified Sensor"). Board: "NodeMCU 1.0 (ESP-12E Module)"
// from the ESP8266 core. See README.md next to this folder.

#include <ESP8266WiFi.h>
#include <PubSubClient.h>
#include <DHT.h>

// ---- Settings: change these ------------------------------------------------------------
const char* WIFI_SSID = "your-wifi";
const char* WIFI_PASSWORD = "your-wifi-password";
const char* MQTT_HOST = "192.168.0.10";  // the machine running `roost serve`
const uint16_t MQTT_PORT = 1883;
const char* MQTT_USER = "yanjo";         // made with `roost user add yanjo`; empty: anonymous
const char* MQTT_PASSWORD = "";          // the password `roost user add` printed
const char* OWNER = "yanjo";             // after iot/: the same as MQTT_USER (a device user may
                                         // publish only under iot/<its own name>/)
const char* PLACE = "livingroom";        // where this board is: livingroom, bedroom, kitchen, ...
const unsigned long INTERVAL_MS = 5000;  // time between two reads (DHT11: at least 1 s)
// -----------------------------------------------------------------------------------------

const uint8_t DHT_PIN = D7;
const uint8_t LIGHT_PIN = A0;
const unsigned long RETRY_MIN_MS = 500;
const unsigned long RETRY_MAX_MS = 30000;

DHT dht(DHT_PIN, DHT11);
WiFiClient wifiClient;
PubSubClient mqtt(wifiClient);

char clientId[48];
unsigned long lastRead = 0;
unsigned long nextAttempt = 0;
unsigned long retryDelay = RETRY_MIN_MS;

// iot/<OWNER>/sensor/<PLACE>/<category>
void publishReading(const char* category, const char* value) {
  char topic[128];
  snprintf(topic, sizeof(topic), "iot/%s/sensor/%s/%s", OWNER, PLACE, category);
  if (!mqtt.publish(topic, value)) {
    Serial.printf("publish to %s failed\n", topic);
  }
}

void readAndPublish() {
  float humidity = dht.readHumidity();
  float temperature = dht.readTemperature();
  char text[16];
  if (isnan(humidity) || isnan(temperature)) {
    Serial.println("DHT11 read failed; skipping temperature and humidity this time");
  } else {
    dtostrf(temperature, 1, 1, text);
    publishReading("temperature", text);
    snprintf(text, sizeof(text), "%d", (int)(humidity + 0.5f));
    publishReading("humidity", text);
  }
  snprintf(text, sizeof(text), "%d", analogRead(LIGHT_PIN));
  publishReading("illuminate", text);
}

// Non-blocking: tries once, then waits retryDelay (doubling up to RETRY_MAX_MS) before the next try.
void keepMqttConnected() {
  if (mqtt.connected() || millis() < nextAttempt) {
    return;
  }
  Serial.printf("connecting to MQTT %s:%u as %s ... ", MQTT_HOST, MQTT_PORT, clientId);
  bool ok = strlen(MQTT_USER) > 0 ? mqtt.connect(clientId, MQTT_USER, MQTT_PASSWORD) : mqtt.connect(clientId);
  if (ok) {
    Serial.println("connected");
    retryDelay = RETRY_MIN_MS;
  } else {
    // state(): -2 network failure, 4 bad user name or password, 5 not authorised.
    Serial.printf("failed (state %d), retrying in %lu ms\n", mqtt.state(), retryDelay);
    nextAttempt = millis() + retryDelay;
    retryDelay = retryDelay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : retryDelay * 2;
  }
}

void setup() {
  Serial.begin(115200);
  Serial.println();
  snprintf(clientId, sizeof(clientId), "nodemcu-%s-%s-%06x", OWNER, PLACE, ESP.getChipId());
  dht.begin();
  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
  Serial.printf("connecting to Wi-Fi %s", WIFI_SSID);
  while (WiFi.status() != WL_CONNECTED) {
    delay(500);
    Serial.print(".");
  }
  Serial.printf(" connected, IP %s\n", WiFi.localIP().toString().c_str());
  mqtt.setServer(MQTT_HOST, MQTT_PORT);
}

void loop() {
  if (WiFi.status() != WL_CONNECTED) {
    delay(100);  // the ESP8266 reconnects Wi-Fi by itself (setAutoReconnect)
    return;
  }
  keepMqttConnected();
  mqtt.loop();
  if (mqtt.connected() && millis() - lastRead >= INTERVAL_MS) {
    lastRead = millis();
    readAndPublish();
  }
}
