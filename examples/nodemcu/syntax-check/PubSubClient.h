// Stub for examples/nodemcu/syntax-check/check.sh: declarations only, never linked.
#pragma once
#include "ESP8266WiFi.h"
struct PubSubClient { PubSubClient(WiFiClient&); PubSubClient& setServer(const char*, uint16_t); bool connect(const char*); bool connect(const char*, const char*, const char*);
  bool connected(); int state(); bool loop(); bool publish(const char*, const char*); };
