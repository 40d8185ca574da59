#!/bin/sh
# A syntax and printf-format check of the sketch with g++ against the stub headers in this
# folder, which declare only the Arduino, ESP8266WiFi, PubSubClient and DHT calls the sketch
# uses. It catches typos and format mismatches; it is NOT a compile for the ESP8266 (that needs
# the ESP8266 core, see ../README.md). Run by `cargo test` (tests/it/simulator.rs).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec "${CXX:-g++}" -std=gnu++17 -fsyntax-only -Wall -Wextra -Wformat=2 -Werror \
  -I"$here" -include Arduino.h -x c++ "$here/../roost_nodemcu/roost_nodemcu.ino"
