// Stub for examples/nodemcu/syntax-check/check.sh: declarations only, never linked.
#pragma once
#include "Arduino.h"
enum { DHT11 = 11 };
struct DHT { DHT(uint8_t, uint8_t); void begin(); float readHumidity(); float readTemperature(); };
