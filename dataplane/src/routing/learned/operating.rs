//! A routing model's calibration and operating points (`models/ARTIFACTS.md`, "Calibration
//! and operating points"): raw scores turned into probabilities of being correct, so one
//! `cost_weight` means the same for every strategy; the conservative rule that keeps the
//! best single model for a query unlike the training ones, and otherwise unless the
//! calibrated gain clears a margin; and the dollar knob
//! (`max_price_per_m`, `quality_floor`) that picks a mix of two policies on the artifact's
//! validated cost-quality envelope.

use routeiq_proto::RouterSettings;
use serde::Deserialize;

/// `calibration` as the manifest writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct CalibrationSpec {
    pub method: String,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
}

/// `operating` as the manifest writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct OperatingSpec {
    pub best_single: usize,
    pub quality: f64,
    pub price_per_m: f64,
    pub margin: f64,
    /// Absent in artifacts made before it: the conservative mode then tests every query.
    #[serde(default)]
    pub query_bytes: Option<QueryBytesSpec>,
    pub curve: Vec<VertexSpec>,
}

/// `operating.query_bytes`: the training queries' shortest and longest length in UTF-8
/// bytes.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct QueryBytesSpec {
    pub min: usize,
    pub max: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VertexSpec {
    pub price_per_m: f64,
    pub quality: f64,
    #[serde(default)]
    pub candidate: Option<usize>,
    #[serde(default)]
    pub cost_weight: Option<f64>,
}

/// Per candidate, Platt scaling: `p = 1 / (1 + exp(-(a * s + b)))`.
#[derive(Debug, Clone)]
pub struct Calibration {
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Calibration {
    /// The calibration of a model with `k` candidates.
    pub fn of(spec: &CalibrationSpec, k: usize) -> Result<Self, String> {
        if spec.method != "platt" {
            return Err(format!(
                "calibration method `{}` is not supported (platt)",
                spec.method
            ));
        }
        if spec.a.len() != k || spec.b.len() != k {
            return Err(format!(
                "calibration has {} and {} coefficients for {k} candidates",
                spec.a.len(),
                spec.b.len()
            ));
        }
        if !spec.a.iter().chain(&spec.b).all(|x| x.is_finite()) {
            return Err("calibration coefficients must be finite".into());
        }
        Ok(Self {
            a: spec.a.clone(),
            b: spec.b.clone(),
        })
    }

    /// Each scored candidate's probability (unscored ones stay unscored).
    pub fn apply(&self, scores: &mut [Option<f32>]) {
        for ((s, a), b) in scores.iter_mut().zip(&self.a).zip(&self.b) {
            if let Some(v) = s {
                *v = (1.0 / (1.0 + (-(a * f64::from(*v) + b)).exp())) as f32;
            }
        }
    }
}

/// What a request is routed by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Every request to this candidate (label).
    Candidate(usize),
    /// The router on calibrated scores, with this `cost_weight`.
    Router(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Vertex {
    price: f64,
    quality: f64,
    policy: Policy,
}

/// The validated operating points of a model.
#[derive(Debug, Clone)]
pub struct Operating {
    /// The best single model's label.
    pub best_single: usize,
    /// Its quality on the out-of-fold rows (what `quality_floor` is a share of).
    quality: f64,
    /// The conservative mode's margin.
    pub margin: f64,
    /// The training queries' lengths in bytes, both ends included (all lengths when the
    /// artifact does not say).
    query_bytes: std::ops::RangeInclusive<usize>,
    /// The envelope's vertices, ascending in price and quality.
    curve: Vec<Vertex>,
}

impl Operating {
    pub fn of(spec: &OperatingSpec, k: usize) -> Result<Self, String> {
        let finite = |x: f64, what: &str| {
            if x.is_finite() {
                Ok(x)
            } else {
                Err(format!("operating {what} must be a finite number"))
            }
        };
        if spec.best_single >= k {
            return Err(format!(
                "operating best_single {} is not a candidate",
                spec.best_single
            ));
        }
        finite(spec.price_per_m, "price_per_m")?;
        if finite(spec.margin, "margin")? < 0.0 {
            return Err("operating margin must not be negative".into());
        }
        let mut curve = Vec::with_capacity(spec.curve.len());
        for v in &spec.curve {
            let policy = match (v.candidate, v.cost_weight) {
                (Some(c), None) if c < k => Policy::Candidate(c),
                (None, Some(w)) if w.is_finite() && w >= 0.0 => Policy::Router(w),
                _ => {
                    return Err(
                        "each operating curve vertex names a candidate or a cost_weight \
                         (not negative)"
                            .into(),
                    )
                }
            };
            let vertex = Vertex {
                price: finite(v.price_per_m, "curve price_per_m")?,
                quality: finite(v.quality, "curve quality")?,
                policy,
            };
            if curve
                .last()
                .is_some_and(|p: &Vertex| vertex.price <= p.price || vertex.quality <= p.quality)
            {
                return Err("the operating curve must strictly ascend in price and quality".into());
            }
            curve.push(vertex);
        }
        if curve.is_empty() {
            return Err("the operating curve has no vertex".into());
        }
        let query_bytes = match spec.query_bytes {
            Some(QueryBytesSpec { min, max }) if min > max => {
                return Err(format!(
                    "operating query_bytes min {min} is above its max {max}"
                ))
            }
            Some(QueryBytesSpec { min, max }) => min..=max,
            None => 0..=usize::MAX,
        };
        Ok(Self {
            best_single: spec.best_single,
            quality: finite(spec.quality, "quality")?,
            margin: spec.margin,
            query_bytes,
            curve,
        })
    }

    /// Whether `query` is as long as some training query and no longer than every one:
    /// outside that range the conservative mode does not trust the router at all.
    pub fn familiar(&self, query: &str) -> bool {
        self.query_bytes.contains(&query.len())
    }

    /// The mix of two adjacent vertices the knob asks for.
    pub fn mix(&self, knob: Knob) -> Mix {
        let (target, at): (f64, fn(&Vertex) -> f64) = match knob {
            Knob::MaxPrice(p) => (p, |v| v.price),
            Knob::QualityFloor(f) => (f * self.quality, |v| v.quality),
        };
        let first = self.curve[0];
        let last = self.curve[self.curve.len() - 1];
        if target <= at(&first) {
            return Mix::only(first.policy);
        }
        for pair in self.curve.windows(2) {
            let (lo, hi) = (pair[0], pair[1]);
            if target <= at(&hi) {
                let span = at(&hi) - at(&lo);
                let weight = if span > 0.0 {
                    (target - at(&lo)) / span
                } else {
                    1.0
                };
                return Mix {
                    low: lo.policy,
                    high: hi.policy,
                    weight,
                };
            }
        }
        Mix::only(last.policy)
    }
}

/// The operator's dollar knob (`routing_strategy_args`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Knob {
    /// `max_price_per_m`: the average USD per million tokens to stay under.
    MaxPrice(f64),
    /// `quality_floor`: the share of the best single model's quality to keep.
    QualityFloor(f64),
}

impl Knob {
    /// The knob set in `settings` (`max_price_per_m` first), if any.
    pub fn of(settings: &RouterSettings) -> Option<Self> {
        let positive = |key| settings.arg_number(key).filter(|v| *v >= 0.0);
        positive("max_price_per_m")
            .map(Knob::MaxPrice)
            .or_else(|| positive("quality_floor").map(Knob::QualityFloor))
    }
}

/// Two policies, `high` taken with probability `weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    low: Policy,
    high: Policy,
    weight: f64,
}

impl Mix {
    fn only(p: Policy) -> Self {
        Self {
            low: p,
            high: p,
            weight: 0.0,
        }
    }

    /// The policy for a request, from a uniform draw in [0, 1).
    pub fn draw(&self, u: f64) -> Policy {
        if u < self.weight {
            self.high
        } else {
            self.low
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operating(curve: &[(f64, f64, Policy)]) -> Operating {
        let spec = OperatingSpec {
            best_single: 2,
            quality: 0.6,
            price_per_m: 0.9,
            margin: 0.05,
            query_bytes: None,
            curve: curve
                .iter()
                .map(|(price, quality, p)| VertexSpec {
                    price_per_m: *price,
                    quality: *quality,
                    candidate: match p {
                        Policy::Candidate(c) => Some(*c),
                        Policy::Router(_) => None,
                    },
                    cost_weight: match p {
                        Policy::Router(w) => Some(*w),
                        Policy::Candidate(_) => None,
                    },
                })
                .collect(),
        };
        Operating::of(&spec, 3).unwrap()
    }

    const CHEAP: Policy = Policy::Candidate(0);
    const MID: Policy = Policy::Router(0.25);
    const TOP: Policy = Policy::Router(0.0);

    fn curve() -> Operating {
        operating(&[(0.1, 0.3, CHEAP), (0.5, 0.6, MID), (0.9, 0.66, TOP)])
    }

    /// Expected (price, quality) of a mix on `curve()`.
    fn expected(m: Mix) -> (f64, f64) {
        let point = |p: Policy| match p {
            CHEAP => (0.1, 0.3),
            MID => (0.5, 0.6),
            _ => (0.9, 0.66),
        };
        let (lo, hi) = (point(m.low), point(m.high));
        (
            lo.0 + m.weight * (hi.0 - lo.0),
            lo.1 + m.weight * (hi.1 - lo.1),
        )
    }

    #[test]
    fn a_price_between_vertices_mixes_them_to_that_price() {
        let m = curve().mix(Knob::MaxPrice(0.3));
        assert_eq!((m.low, m.high), (CHEAP, MID));
        let (price, quality) = expected(m);
        assert!((price - 0.3).abs() < 1e-12);
        assert!((quality - 0.45).abs() < 1e-12);
        assert_eq!(m.draw(0.49), MID);
        assert_eq!(m.draw(0.51), CHEAP);
    }

    #[test]
    fn a_quality_floor_is_a_share_of_the_best_single_models_quality() {
        // 1.0 x 0.6 is exactly the middle vertex: all of it.
        let m = curve().mix(Knob::QualityFloor(1.0));
        assert_eq!(m.high, MID);
        assert!((m.weight - 1.0).abs() < 1e-12);
        assert_eq!(m.draw(0.999), MID);
        // 1.05 x 0.6 = 0.63: half way up the last segment.
        let (price, quality) = expected(curve().mix(Knob::QualityFloor(1.05)));
        assert!((quality - 0.63).abs() < 1e-12);
        assert!((price - 0.7).abs() < 1e-12);
    }

    #[test]
    fn targets_outside_the_curve_take_its_ends() {
        assert_eq!(curve().mix(Knob::MaxPrice(0.01)).draw(0.0), CHEAP);
        assert_eq!(curve().mix(Knob::MaxPrice(0.1)).draw(0.0), CHEAP);
        assert_eq!(curve().mix(Knob::MaxPrice(50.0)).draw(0.0), TOP);
        assert_eq!(curve().mix(Knob::QualityFloor(2.0)).draw(0.0), TOP);
        let single = operating(&[(0.4, 0.5, MID)]);
        for knob in [
            Knob::MaxPrice(0.0),
            Knob::MaxPrice(9.0),
            Knob::QualityFloor(0.9),
        ] {
            assert_eq!(single.mix(knob).draw(0.5), MID);
        }
    }

    #[test]
    fn calibration_is_a_logistic_per_candidate() {
        let c = Calibration::of(
            &CalibrationSpec {
                method: "platt".into(),
                a: vec![2.0, 0.0, -1.0],
                b: vec![0.0, 1.0, 0.5],
            },
            3,
        )
        .unwrap();
        let mut s = vec![Some(0.0), Some(7.0), None];
        c.apply(&mut s);
        assert_eq!(s[0], Some(0.5));
        assert!((s[1].unwrap() - 0.731_058_6).abs() < 1e-6);
        assert_eq!(s[2], None);
        let mut more = vec![Some(1.0), Some(0.0), Some(0.0)];
        c.apply(&mut more);
        assert!(more[0].unwrap() > 0.5 && (more[2].unwrap() - 0.622_459_3).abs() < 1e-6);
    }

    #[test]
    fn malformed_specs_are_refused() {
        let platt = |a: Vec<f64>| CalibrationSpec {
            method: "platt".into(),
            b: vec![0.0; a.len()],
            a,
        };
        assert!(Calibration::of(&platt(vec![1.0, 1.0]), 3).is_err());
        assert!(Calibration::of(&platt(vec![1.0, f64::NAN, 1.0]), 3).is_err());
        let isotonic = CalibrationSpec {
            method: "isotonic".into(),
            ..platt(vec![1.0; 3])
        };
        assert!(Calibration::of(&isotonic, 3).is_err());

        let vertex = |price, quality, candidate, cost_weight| VertexSpec {
            price_per_m: price,
            quality,
            candidate,
            cost_weight,
        };
        let spec = |best_single, curve| OperatingSpec {
            best_single,
            quality: 0.6,
            price_per_m: 0.9,
            margin: 0.0,
            query_bytes: None,
            curve,
        };
        let ok = vec![
            vertex(0.1, 0.3, Some(0), None),
            vertex(0.9, 0.7, None, Some(0.0)),
        ];
        assert!(Operating::of(&spec(2, ok.clone()), 3).is_ok());
        assert!(
            Operating::of(&spec(3, ok.clone()), 3).is_err(),
            "best_single"
        );
        assert!(Operating::of(&spec(2, vec![]), 3).is_err(), "empty curve");
        let descending = vec![ok[1].clone(), ok[0].clone()];
        assert!(Operating::of(&spec(2, descending), 3).is_err());
        let same_price = vec![ok[0].clone(), vertex(0.1, 0.4, None, Some(1.0))];
        assert!(Operating::of(&spec(2, same_price), 3).is_err());
        let both = vec![vertex(0.1, 0.3, Some(0), Some(0.1))];
        assert!(Operating::of(&spec(2, both), 3).is_err());
        let neither = vec![vertex(0.1, 0.3, None, None)];
        assert!(Operating::of(&spec(2, neither), 3).is_err());
        let unknown = vec![vertex(0.1, 0.3, Some(5), None)];
        assert!(Operating::of(&spec(2, unknown), 3).is_err());
        let range = |min, max| OperatingSpec {
            query_bytes: Some(QueryBytesSpec { min, max }),
            ..spec(2, ok.clone())
        };
        assert!(Operating::of(&range(7, 6), 3).is_err(), "min above max");
        assert!(Operating::of(&range(6, 6), 3).is_ok());
    }

    #[test]
    fn familiar_queries_are_as_long_in_bytes_as_the_training_ones() {
        let range = |query_bytes| {
            let spec = OperatingSpec {
                best_single: 0,
                quality: 0.5,
                price_per_m: 1.0,
                margin: 0.0,
                query_bytes,
                curve: vec![VertexSpec {
                    price_per_m: 1.0,
                    quality: 0.5,
                    candidate: Some(0),
                    cost_weight: None,
                }],
            };
            Operating::of(&spec, 1).unwrap()
        };
        let o = range(Some(QueryBytesSpec { min: 2, max: 6 }));
        // "é" is two bytes: as the pipeline counts (`len(q.encode("utf-8"))`)
        let got: Vec<bool> = ["a", "ab", "aé", "ééé", "abcdefg", "éééé"]
            .iter()
            .map(|q| o.familiar(q))
            .collect();
        assert_eq!(got, [false, true, true, true, false, false]);
        // made before the range existed: every query is familiar
        let old = range(None);
        assert!(old.familiar("") && old.familiar(&"x".repeat(100_000)));
    }
}
