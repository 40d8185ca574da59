//! A virtual NodeMCU like the ones in the stack Roost replaces: a DHT11 (temperature and
//! humidity) and a CdS photoresistor on A0. Pure and deterministic for a given seed: the caller
//! supplies the clock, so tests can run a simulated day in microseconds.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What one read of the board's sensors publishes: a category and the payload text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub category: &'static str,
    pub payload: String,
    /// True when this sample is a simulated sensor fault rather than a measurement.
    pub glitch: bool,
}

/// The categories a board publishes, in the order it reads them.
pub const CATEGORIES: [&str; 3] = ["temperature", "humidity", "illuminate"];

/// The DHT11's measuring range: 0–50 °C, 20–90 %RH. Readings are clamped to it.
pub const TEMPERATURE_RANGE: (f64, f64) = (0.0, 50.0);
pub const HUMIDITY_RANGE: (f64, f64) = (20.0, 90.0);
/// `analogRead(A0)` on an ESP8266: 10 bits.
pub const LIGHT_RANGE: (f64, f64) = (0.0, 1023.0);

/// Rooms a fleet is spread over, in order; further boards are called `room7`, `room8`, ….
pub const PLACES: [&str; 6] = ["livingroom", "bedroom", "kitchen", "study", "bathroom", "hallway"];

/// The name of the `index`-th board's place.
pub fn place_name(index: usize) -> String {
    PLACES.get(index).map(|p| (*p).to_owned()).unwrap_or_else(|| format!("room{}", index + 1))
}

/// A value that wanders around a moving target (an Ornstein–Uhlenbeck process): slow drift,
/// never running away.
#[derive(Debug, Clone)]
struct Drift {
    value: f64,
    /// How fast it returns to the target, per hour.
    pull_per_hour: f64,
    /// Random change per square-root hour.
    noise_per_sqrt_hour: f64,
}

impl Drift {
    fn step(&mut self, target: f64, hours: f64, rng: &mut SmallRng) -> f64 {
        let pull = 1.0 - (-self.pull_per_hour * hours).exp();
        self.value += (target - self.value) * pull + self.noise_per_sqrt_hour * hours.sqrt() * standard_normal(rng);
        self.value
    }
}

/// Box–Muller: one draw from N(0, 1).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// How one room behaves: its usual climate, how much daylight reaches it, when its lamp is on.
#[derive(Debug, Clone, Copy)]
struct Room {
    temperature: f64,
    humidity: f64,
    daylight: f64,
    lamp_hours: (f64, f64),
}

fn room(index: usize) -> Room {
    match index % PLACES.len() {
        0 => Room { temperature: 22.5, humidity: 45.0, daylight: 1.0, lamp_hours: (18.5, 23.0) },
        1 => Room { temperature: 21.0, humidity: 50.0, daylight: 0.6, lamp_hours: (21.5, 23.5) },
        2 => Room { temperature: 23.5, humidity: 55.0, daylight: 0.8, lamp_hours: (17.5, 20.5) },
        3 => Room { temperature: 22.0, humidity: 42.0, daylight: 0.7, lamp_hours: (19.0, 22.0) },
        4 => Room { temperature: 24.0, humidity: 65.0, daylight: 0.3, lamp_hours: (7.0, 7.5) },
        _ => Room { temperature: 20.5, humidity: 48.0, daylight: 0.4, lamp_hours: (18.0, 22.0) },
    }
}

/// One virtual board.
#[derive(Debug, Clone)]
pub struct Board {
    pub place: String,
    room: Room,
    temperature: Drift,
    humidity: Drift,
    clouds: Drift,
    rng: SmallRng,
    glitch_rate: f64,
    last_read_ms: Option<i64>,
}

impl Board {
    /// The `index`-th board of a fleet. `glitch_rate` is the share of reads that fail.
    pub fn new(index: usize, seed: u64, glitch_rate: f64) -> Self {
        let room = room(index);
        let mut rng = SmallRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let offset = rng.random_range(-1.0..1.0);
        Self {
            place: place_name(index),
            room,
            temperature: Drift { value: room.temperature + offset, pull_per_hour: 0.5, noise_per_sqrt_hour: 0.4 },
            humidity: Drift { value: room.humidity + 3.0 * offset, pull_per_hour: 0.7, noise_per_sqrt_hour: 2.0 },
            clouds: Drift { value: 0.8, pull_per_hour: 0.3, noise_per_sqrt_hour: 0.15 },
            rng,
            glitch_rate: glitch_rate.clamp(0.0, 1.0),
            last_read_ms: None,
        }
    }

    /// Reads the three sensors at `now_ms` (Unix milliseconds); `utc_offset_secs` places the
    /// day/night cycle in the local day.
    pub fn read(&mut self, now_ms: i64, utc_offset_secs: i32) -> [Sample; 3] {
        let hours_since = self.last_read_ms.map_or(0.0, |last| ((now_ms - last).max(0) as f64) / 3_600_000.0).min(24.0);
        self.last_read_ms = Some(now_ms);
        let hour = local_hour(now_ms, utc_offset_secs);
        // Warmest mid-afternoon, coolest before dawn; air is drier when it is warm.
        let daily = (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin();
        let temperature = self.temperature.step(self.room.temperature + 1.5 * daily, hours_since, &mut self.rng);
        let humidity = self.humidity.step(self.room.humidity - 4.0 * daily, hours_since, &mut self.rng);
        let clouds = self.clouds.step(0.8, hours_since, &mut self.rng).clamp(0.3, 1.0);
        let sun = (std::f64::consts::PI * (hour - 6.0) / 12.0).sin().max(0.0);
        let lamp = if (self.room.lamp_hours.0..self.room.lamp_hours.1).contains(&hour) { 380.0 } else { 0.0 };
        let light = 12.0 + 820.0 * sun * self.room.daylight * clouds + lamp + 6.0 * standard_normal(&mut self.rng);

        // A DHT11 read that fails returns NaN for both values; a naive sketch publishes "nan"
        // (the stack Roost replaces did). A loose CdS wire reads full scale.
        let dht_fails = self.rng.random_bool(self.glitch_rate);
        let cds_fails = self.rng.random_bool(self.glitch_rate);
        let dht = |value: f64, text: String| {
            if dht_fails {
                ("nan".to_owned(), true)
            } else {
                (text, value.is_nan())
            }
        };
        let (t, t_glitch) = dht(temperature, format!("{:.1}", temperature.clamp(TEMPERATURE_RANGE.0, TEMPERATURE_RANGE.1)));
        // The DHT11 reports humidity in whole percent.
        let (h, h_glitch) = dht(humidity, format!("{:.0}", humidity.clamp(HUMIDITY_RANGE.0, HUMIDITY_RANGE.1)));
        let l = if cds_fails { 1023.0 } else { light.round().clamp(LIGHT_RANGE.0, LIGHT_RANGE.1) };
        [
            Sample { category: CATEGORIES[0], payload: t, glitch: t_glitch },
            Sample { category: CATEGORIES[1], payload: h, glitch: h_glitch },
            Sample { category: CATEGORIES[2], payload: format!("{l:.0}"), glitch: cds_fails },
        ]
    }
}

/// Hour of the local day, 0.0 ≤ h < 24.0.
fn local_hour(now_ms: i64, utc_offset_secs: i32) -> f64 {
    let local_secs = now_ms.div_euclid(1000) + i64::from(utc_offset_secs);
    local_secs.rem_euclid(86_400) as f64 / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;
    /// 2026-11-25T00:00:00Z.
    const MIDNIGHT: i64 = 1_795_564_800_000;

    fn value(sample: &Sample) -> f64 {
        sample.payload.parse().unwrap()
    }

    #[test]
    fn a_simulated_week_stays_in_the_sensors_ranges_with_their_resolution() {
        for index in 0..8 {
            let mut board = Board::new(index, 7, 0.0);
            for minute in 0..7 * 24 * 60 {
                let samples = board.read(MIDNIGHT + minute * 60_000, 0);
                let [t, h, l] = samples.each_ref().map(value);
                assert!((TEMPERATURE_RANGE.0..=TEMPERATURE_RANGE.1).contains(&t), "{t}");
                assert!((HUMIDITY_RANGE.0..=HUMIDITY_RANGE.1).contains(&h), "{h}");
                assert!((LIGHT_RANGE.0..=LIGHT_RANGE.1).contains(&l), "{l}");
                assert_eq!(h.fract(), 0.0, "whole-percent humidity");
                assert_eq!(l.fract(), 0.0, "integer ADC counts");
                assert!(!samples.iter().any(|s| s.glitch));
            }
        }
    }

    #[test]
    fn temperature_drifts_slowly() {
        let mut board = Board::new(0, 1, 0.0);
        let mut previous = value(&board.read(MIDNIGHT, 0)[0]);
        for step in 1..2000 {
            let t = value(&board.read(MIDNIGHT + step * 5_000, 0)[0]);
            assert!((t - previous).abs() < 0.5, "a 5 s step moved {previous} → {t}");
            previous = t;
        }
    }

    #[test]
    fn it_is_brighter_at_noon_than_at_night_in_local_time() {
        let mut board = Board::new(0, 3, 0.0);
        let at = |board: &mut Board, hour: i64, offset: i32| value(&board.read(MIDNIGHT + hour * HOUR_MS, offset)[2]);
        assert!(at(&mut board, 12, 0) > 300.0 + at(&mut board, 3, 0));
        // 03:00 UTC is noon in UTC+9 (Seoul).
        assert!(at(&mut board, 3, 9 * 3600) > 300.0 + at(&mut board, 15, 9 * 3600));
    }

    #[test]
    fn glitches_are_dht_nan_and_cds_full_scale_at_about_the_asked_rate() {
        let mut board = Board::new(2, 5, 0.1);
        let (mut reads, mut glitches) = (0, 0);
        for minute in 0..10_000 {
            for sample in board.read(MIDNIGHT + minute * 60_000, 0) {
                reads += 1;
                if sample.glitch {
                    glitches += 1;
                    assert!(sample.payload == "nan" || sample.payload == "1023", "{sample:?}");
                }
            }
        }
        let rate = glitches as f64 / reads as f64;
        assert!((0.08..0.12).contains(&rate), "glitch rate {rate}");
    }

    #[test]
    fn the_same_seed_gives_the_same_readings() {
        let run = |seed| {
            let mut board = Board::new(1, seed, 0.05);
            (0..100).map(|m| board.read(MIDNIGHT + m * 60_000, 0)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn places_follow_the_seed_stack_then_number_on() {
        assert_eq!(place_name(0), "livingroom");
        assert_eq!(place_name(2), "kitchen");
        assert_eq!(place_name(6), "room7");
    }
}
