// Stub for examples/nodemcu/syntax-check/check.sh: declarations only, never linked.
#pragma once
#include "Arduino.h"
enum { WIFI_STA }; enum wl_status_t { WL_CONNECTED, WL_DISCONNECTED };
struct IPAddress { String toString(); };
struct WiFiT { void mode(int); void setAutoReconnect(bool); void begin(const char*, const char*); wl_status_t status(); IPAddress localIP(); };
extern WiFiT WiFi;
struct WiFiClient {};
