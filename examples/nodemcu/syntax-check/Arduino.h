// Stub for examples/nodemcu/syntax-check/check.sh: declarations only, never linked.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <string>
using std::isnan;
extern const uint8_t D7; extern const uint8_t A0;
unsigned long millis(); void delay(unsigned long); int analogRead(uint8_t);
char* dtostrf(double, signed char, unsigned char, char*);
struct String { std::string s; const char* c_str() const { return s.c_str(); } };
struct SerialT { void begin(long); void println(const char* = ""); void print(const char*); int printf(const char*, ...) __attribute__((format(printf, 2, 3))); };
extern SerialT Serial;
struct EspT { uint32_t getChipId(); }; extern EspT ESP;
