//! Per-host timing: a smoothed RTT and its variance set each probe's timeout (RFC 6298's
//! estimator), and a congestion window limits probes in flight to a host.
//!
//! The window grows while answers come and shrinks only on *evidence of loss*: a probe
//! that timed out and whose retry was then answered. A probe that is never answered is a
//! filtered port, not congestion, so thousands of filtered ports do not collapse the window
//! into a crawl (nmap's failure on filtered networks). Decreases happen at most once per
//! smoothed RTT, so one burst of loss counts once.

use std::time::{Duration, Instant};

/// Named timing presets, from slowest to fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingPreset {
    Paranoid,
    Sneaky,
    Polite,
    Normal,
    Aggressive,
    Insane,
}

impl TimingPreset {
    pub fn parse(s: &str) -> Option<TimingPreset> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "paranoid" | "0" | "t0" => TimingPreset::Paranoid,
            "sneaky" | "1" | "t1" => TimingPreset::Sneaky,
            "polite" | "2" | "t2" => TimingPreset::Polite,
            "normal" | "3" | "t3" => TimingPreset::Normal,
            "aggressive" | "4" | "t4" => TimingPreset::Aggressive,
            "insane" | "5" | "t5" => TimingPreset::Insane,
            _ => return None,
        })
    }

    /// The timing parameters of a preset.
    pub fn params(self) -> Timing {
        let ms = Duration::from_millis;
        let base = Timing {
            initial_timeout: ms(1000),
            min_timeout: ms(100),
            max_timeout: ms(10_000),
            max_retries: 2,
            adaptive_retries: true,
            initial_window: 256,
            max_window: 8192,
            scan_delay: Duration::ZERO,
            max_rate: None,
            min_rate: None,
        };
        match self {
            TimingPreset::Paranoid => Timing {
                initial_timeout: ms(5000),
                min_timeout: ms(1000),
                initial_window: 1,
                max_window: 1,
                scan_delay: ms(5 * 60 * 1000),
                ..base
            },
            TimingPreset::Sneaky => Timing {
                initial_timeout: ms(5000),
                min_timeout: ms(1000),
                initial_window: 1,
                max_window: 1,
                scan_delay: ms(15_000),
                ..base
            },
            TimingPreset::Polite => Timing {
                initial_window: 1,
                max_window: 1,
                scan_delay: ms(400),
                ..base
            },
            TimingPreset::Normal => base,
            TimingPreset::Aggressive => Timing {
                initial_timeout: ms(500),
                min_timeout: ms(50),
                max_timeout: ms(1250),
                max_retries: 2,
                initial_window: 512,
                max_window: 16_384,
                ..base
            },
            TimingPreset::Insane => Timing {
                initial_timeout: ms(250),
                min_timeout: ms(50),
                max_timeout: ms(300),
                max_retries: 1,
                initial_window: 1024,
                max_window: 32_768,
                ..base
            },
        }
    }
}

/// Timing parameters for a scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Timeout before any RTT has been measured.
    pub initial_timeout: Duration,
    pub min_timeout: Duration,
    pub max_timeout: Duration,
    /// Retries of an unanswered probe before the port is called filtered.
    pub max_retries: u8,
    /// Raise the retries of a host whose answers show loss, so that a lost probe is not
    /// mistaken for a filtered port (off when the user fixes `--max-retries`).
    pub adaptive_retries: bool,
    pub initial_window: u32,
    pub max_window: u32,
    /// Pause between probes to the same host (the slow presets).
    pub scan_delay: Duration,
    /// Probes per second, at most.
    pub max_rate: Option<f64>,
    /// Probes per second, at least: the congestion window may not hold the rate below it.
    pub min_rate: Option<f64>,
}

/// Retries needed on a link that loses a fraction `loss` of probe round trips, so that a
/// port is mistaken for filtered with probability at most 1e-7: the smallest `r` with
/// `loss^(r+1) <= 1e-7`, at least `base`, at most 12.
pub fn retries_for_loss(loss: f64, base: u8) -> u8 {
    if loss <= 0.0 {
        return base;
    }
    let loss = loss.min(0.9);
    let attempts = ((1e-7f64).ln() / loss.ln()).ceil();
    // attempts is in [1, ~153] for loss in (0, 0.9]; the cap keeps it small.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let retries = (attempts as u8).saturating_sub(1);
    retries.clamp(base, 12)
}

/// RFC 6298's estimator: SRTT and RTTVAR with gains 1/8 and 1/4; timeout = SRTT + 4 RTTVAR.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
        }
    }
}

impl RttEstimator {
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The timeout for the next probe, clamped to the timing's bounds.
    pub fn timeout(&self, t: &Timing) -> Duration {
        match self.srtt {
            None => t.initial_timeout,
            // RFC 6298 adds max(G, 4 RTTVAR); on a very steady link RTTVAR decays towards
            // zero, so keep a margin of a quarter SRTT (at least 2 ms) above it.
            Some(srtt) => {
                let margin = (self.rttvar * 4).max((srtt / 4).max(Duration::from_millis(2)));
                (srtt + margin).clamp(t.min_timeout, t.max_timeout)
            }
        }
    }
}

/// Per-host congestion window with slow start.
///
/// Loss is measured per round (about one smoothed RTT, at least 32 answers): the fraction
/// of answers that needed a retry. A lossy link loses about the same fraction whatever the
/// window; congestion makes the fraction climb as the window grows. So the window shrinks
/// (by a quarter) only when a round's loss clearly exceeds the host's running average
/// (more than twice it and five points above it, two rounds in a row), or exceeds a
/// quarter outright; never for the link's steady loss, and never for unanswered probes
/// (filtered ports).
///
/// The average learns only from rounds sent at a steady pace (answers within a quarter of
/// the previous round's): while the window doubles, the retries answered in a round belong
/// to the smaller rounds before it, so the fraction reads low and would set the bar too
/// low for the link's real loss.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    cwnd: f64,
    ssthresh: f64,
    max: f64,
    round_start: Option<Instant>,
    round_answers: u32,
    round_losses: u32,
    /// Answers of the previous round, to tell steady rounds from growing ones.
    prev_answers: u32,
    /// Running average of the per-round loss fraction (gain 1/8), after the warm-up.
    loss_avg: Option<f64>,
    /// Steady rounds measured so far (the first ones only learn the link's loss).
    rounds: u32,
    /// Sum of the warm-up rounds' loss fractions.
    warmup_sum: f64,
    /// Whether the previous round was over the threshold.
    was_over: bool,
}

/// Steady rounds that only learn the link's loss.
const WARMUP_ROUNDS: u32 = 3;

/// Answers needed before a round's loss fraction is trusted.
const MIN_ROUND_ANSWERS: u32 = 32;

/// A round losing more than this is congestion whatever the average says.
const LOSS_CEILING: f64 = 0.25;

impl Window {
    pub fn new(t: &Timing) -> Window {
        Window {
            cwnd: f64::from(t.initial_window.max(1)),
            ssthresh: f64::from(t.max_window.max(1)),
            max: f64::from(t.max_window.max(1)),
            round_start: None,
            round_answers: 0,
            round_losses: 0,
            prev_answers: 0,
            loss_avg: None,
            rounds: 0,
            warmup_sum: 0.0,
            was_over: false,
        }
    }

    /// Probes allowed in flight.
    pub fn allowed(&self) -> u32 {
        // cwnd lives in [1, max_window], which fits u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = self.cwnd.floor() as u32;
        n.max(1)
    }

    fn grow(&mut self) {
        if self.cwnd < self.ssthresh {
            self.cwnd += 1.0; // slow start: doubles per round trip
        } else {
            self.cwnd += 1.0 / self.cwnd; // congestion avoidance: +1 per round trip
        }
        self.cwnd = self.cwnd.min(self.max);
    }

    /// A probe was answered; `after_retry` when an earlier attempt of it went unanswered
    /// (evidence of loss). Returns true when this ended a round judged congested.
    pub fn on_answer(&mut self, after_retry: bool, now: Instant, srtt: Duration) -> bool {
        let start = *self.round_start.get_or_insert(now);
        self.round_answers += 1;
        self.round_losses += u32::from(after_retry);
        let mut congested = false;
        if now.duration_since(start) >= srtt.max(Duration::from_millis(5))
            && self.round_answers >= MIN_ROUND_ANSWERS
        {
            let frac = f64::from(self.round_losses) / f64::from(self.round_answers);
            let steady = f64::from(self.round_answers) <= f64::from(self.prev_answers) * 1.25;
            if frac > LOSS_CEILING {
                congested = self.was_over;
                self.was_over = !congested;
            } else if let Some(avg) = self.loss_avg {
                // Two rounds in a row over the line: one noisy round is not congestion.
                let over = frac > (avg * 2.0).max(avg + 0.05);
                congested = over && self.was_over;
                self.was_over = over && !congested;
                if steady {
                    self.loss_avg = Some(avg * 0.875 + frac * 0.125);
                }
            } else if steady {
                self.rounds += 1;
                self.warmup_sum += frac;
                if self.rounds >= WARMUP_ROUNDS {
                    self.loss_avg = Some(self.warmup_sum / f64::from(self.rounds));
                }
            }
            self.prev_answers = self.round_answers;
            self.round_start = Some(now);
            self.round_answers = 0;
            self.round_losses = 0;
        }
        if congested {
            self.cwnd = (self.cwnd * 0.75).max(1.0);
            self.ssthresh = self.cwnd.max(2.0);
        } else {
            self.grow();
        }
        congested
    }

    /// A probe went unanswered through all its retries (a filtered port or a silent host):
    /// not congestion, and the network did not complain, so the window keeps growing.
    pub fn on_silence(&mut self) {
        self.grow();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_follows_rfc6298() {
        let t = TimingPreset::Normal.params();
        let mut e = RttEstimator::default();
        assert_eq!(e.timeout(&t), t.initial_timeout);
        e.sample(Duration::from_millis(100));
        assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(e.timeout(&t), Duration::from_millis(300)); // 100 + 4 * 50
        for _ in 0..50 {
            e.sample(Duration::from_millis(100));
        }
        assert!(e.timeout(&t) <= Duration::from_millis(125));
        assert!(e.timeout(&t) > Duration::from_millis(100));
        assert!(e.timeout(&t) >= t.min_timeout);
    }

    #[test]
    fn window_ignores_steady_link_loss_but_backs_off_on_rising_loss() {
        let t = TimingPreset::Normal.params();
        let mut w = Window::new(&t);
        let start = w.allowed();
        let rtt = Duration::from_millis(20);
        let mut now = Instant::now();
        // 5% steady loss for 50 rounds of 100 answers: the window only grows.
        for round in 0..50 {
            for i in 0..100 {
                let lost = i % 20 == round % 20;
                assert!(!w.on_answer(lost, now, rtt), "round {round}");
            }
            now += rtt;
        }
        assert!(w.allowed() > start * 4, "{}", w.allowed());
        let before = w.allowed();
        // Loss jumps to 40%: congestion, the window shrinks.
        let mut shrank = false;
        for _ in 0..3 {
            for i in 0..100 {
                shrank |= w.on_answer(i % 5 < 2, now, rtt);
            }
            now += rtt;
        }
        assert!(
            shrank && w.allowed() < before,
            "{} vs {before}",
            w.allowed()
        );
        // Silence (filtered ports) never shrinks it.
        let w0 = w.allowed();
        for _ in 0..1000 {
            w.on_silence();
        }
        assert!(w.allowed() >= w0);
    }

    #[test]
    fn retries_grow_with_loss() {
        assert_eq!(retries_for_loss(0.0, 2), 2);
        assert_eq!(retries_for_loss(0.001, 2), 2);
        assert!((6..=7).contains(&retries_for_loss(0.1, 2))); // 0.1^7 = 1e-7
        assert!(retries_for_loss(0.2, 2) >= 9);
        assert_eq!(retries_for_loss(0.9, 2), 12);
    }

    #[test]
    fn presets_parse() {
        assert_eq!(TimingPreset::parse("T4"), Some(TimingPreset::Aggressive));
        assert_eq!(TimingPreset::parse("insane"), Some(TimingPreset::Insane));
        assert_eq!(TimingPreset::parse("warp"), None);
    }
}
