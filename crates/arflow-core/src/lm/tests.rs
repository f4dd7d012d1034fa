//! The packed single-step path against the tensor graph, batch independence, invalidation of the
//! packed weights, and the Rust sampling loop.

use super::fast::{FastLm, StepScratch};
use super::sampling::{sample_logits, SampleScratch, Sampling, Sfc32};
use super::{CharLm, CharLmConfig, GradPath};
use crate::optim::AdamWConfig;
use crate::rnn::CellKind;
use crate::Dev;

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    crate::test_values::fill(n, seed).into_iter().map(|v| v * scale).collect()
}

fn model(cell: CellKind, layers: usize, learned_h0: bool, ahead: usize) -> CharLm {
    let cfg = CharLmConfig { vocab: 29, embed: 12, hidden: 40, layers, cell, learned_h0, ahead };
    let mut m = CharLm::new(cfg, Dev::Cpu).unwrap();
    for (i, s) in m.params().specs().to_vec().into_iter().enumerate() {
        let scale = if s.name == "embedding.weight" { 1.0 } else { 0.4 };
        m.params_mut().set_param(&s.name, &values(s.len(), 11 + i as u64, scale)).unwrap();
    }
    m
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Logits agree to f32 rounding: |a − b| ≤ 4 ulp of the largest term a logit sums (|b| + Σ|w h| ≤
/// |b| + H·max|w|, with |h| ≤ 1); only the head's summation order differs.
fn assert_logits_close(what: &str, got: &[f32], want: &[f32], hidden: usize) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bound = 4.0 * f32::EPSILON * (1.0 + 0.4 * hidden as f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= bound, "{what}[{i}]: {g} vs {w} (bound {bound})");
    }
}

const CASES: [(CellKind, usize, bool); 8] = [
    (CellKind::Gru, 1, false),
    (CellKind::Gru, 2, true),
    (CellKind::Lstm, 1, false),
    (CellKind::Lstm, 2, true),
    (CellKind::Rnn, 1, true),
    (CellKind::Rnn, 2, false),
    (CellKind::Gru, 3, false),
    (CellKind::Lstm, 1, true),
];

#[test]
fn fast_step_matches_the_tensor_graph() {
    for (cell, layers, h0) in CASES {
        let m = model(cell, layers, h0, if layers == 2 { 3 } else { 1 });
        for batch in [1, 2, 5] {
            let what = format!("{cell:?} L{layers} h0={h0} B{batch}");
            let (mut sf, mut sg): (Option<Vec<f32>>, Option<Vec<f32>>) = (None, None);
            for t in 0..6 {
                let tokens: Vec<u32> = (0..batch).map(|b| ((t * 7 + b * 11 + 3) % 29) as u32).collect();
                let (nf, lf) = m.step(sf.as_deref(), &tokens).unwrap();
                let (ng, lg) = m.step_graph(sg.as_deref(), &tokens).unwrap();
                // The states are the training forward's, bit for bit; the logits differ by the head's
                // summation order only.
                assert!(same_bits(&nf, &ng), "{what} step {t}: states differ");
                assert_logits_close(&format!("{what} step {t} logits"), &lf, &lg, 40);
                sf = Some(nf);
                sg = Some(ng);
            }
        }
    }
}

#[test]
fn fast_step_without_a_table_matches_the_tabulated_one() {
    for (cell, layers, h0) in CASES {
        let m = model(cell, layers, h0, 1);
        let with = FastLm::new(&m.cfg, &m.store).unwrap();
        let without = FastLm::with_table_limit(&m.cfg, &m.store, 0).unwrap();
        let tokens = [3u32, 28, 0];
        let state = values(layers * 3 * m.cfg.state_len(), 5, 0.7);
        let mut out = [vec![0f32; state.len()], vec![0f32; state.len()]];
        let mut logits = [vec![0f32; 3 * 29], vec![0f32; 3 * 29]];
        for (k, f) in [with, without].iter().enumerate() {
            f.step(&state, &tokens, &mut out[k], Some(&mut logits[k]), &mut StepScratch::default());
        }
        assert!(same_bits(&out[0], &out[1]), "{cell:?} L{layers}: states differ");
        assert!(same_bits(&logits[0], &logits[1]), "{cell:?} L{layers}: logits differ");
    }
}

#[test]
fn a_stream_steps_the_same_alone_and_in_a_batch() {
    for (cell, layers, h0) in CASES {
        let m = model(cell, layers, h0, 1);
        let (n, s, v) = (7, m.cfg.state_len(), 29);
        let state = values(layers * n * s, 9, 0.8);
        let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 5 + 1) % 29).collect();
        let (all, all_logits) = m.step(Some(&state), &tokens).unwrap();
        for r in 0..n {
            let one: Vec<f32> =
                (0..layers).flat_map(|l| state[(l * n + r) * s..(l * n + r + 1) * s].to_vec()).collect();
            let (alone, logits) = m.step(Some(&one), &tokens[r..r + 1]).unwrap();
            for l in 0..layers {
                assert!(
                    same_bits(&alone[l * s..(l + 1) * s], &all[(l * n + r) * s..(l * n + r + 1) * s]),
                    "{cell:?} L{layers}: stream {r} layer {l} differs alone"
                );
            }
            assert!(same_bits(&logits, &all_logits[r * v..(r + 1) * v]), "{cell:?}: stream {r} logits differ alone");
        }
    }
}

#[test]
fn the_packed_weights_follow_every_parameter_change() {
    for cell in CellKind::ALL {
        let mut m = model(cell, 2, true, 1);
        let tokens = [4u32, 17];
        let check = |m: &CharLm, what: &str| {
            let (sf, lf) = m.step(None, &tokens).unwrap();
            let (sg, lg) = m.step_graph(None, &tokens).unwrap();
            assert!(same_bits(&sf, &sg), "{cell:?} after {what}: stale states");
            assert_logits_close(&format!("{cell:?} after {what}"), &lf, &lg, 40);
            lf
        };
        let before = check(&m, "init");
        // Each kind of write: a parameter, the learned h0, the head, a training step.
        let w = m.params().get_param(&format!("{}.weight_hh_l1", cell.name())).unwrap();
        m.params_mut()
            .set_param(&format!("{}.weight_hh_l1", cell.name()), &w.iter().map(|x| -x).collect::<Vec<_>>())
            .unwrap();
        let after = check(&m, "set_param");
        assert!(!same_bits(&before, &after), "the change should move the logits");
        let h0 = values(2 * m.cfg.state_len(), 77, 0.5);
        m.params_mut().set_param("h0", &h0).unwrap();
        check(&m, "set_param h0");
        m.params_mut().set_param("head.bias", &values(29, 78, 2.0)).unwrap();
        check(&m, "set_param head.bias");
        let ids: Vec<u32> = (0..2 * 5).map(|i| (i * 3 % 29) as u32).collect();
        let tg: Vec<u32> = (0..2 * 5).map(|i| (i * 7 % 29) as u32).collect();
        let cfg = AdamWConfig { lr: 0.05, ..AdamWConfig::default() };
        let before = check(&m, "set_params");
        m.train_step(&ids, &tg, 2, 5, &cfg).unwrap();
        let after = check(&m, "train_step");
        assert!(!same_bits(&before, &after), "training should move the logits");
    }
}

/// `sample_logits` written the obvious way, to check the one that reuses buffers against.
fn draw_reference(logits: &[f32], o: &Sampling, rng: &mut Sfc32) -> usize {
    let mut scratch = SampleScratch::default();
    sample_logits(logits, o, rng, &mut scratch)
}

#[test]
fn sampling_sessions_draw_the_same_alone_and_together() {
    for (cell, layers, h0) in CASES {
        let m = model(cell, layers, h0, 1);
        let (n, p, len) = (5, 3, 40);
        let prime: Vec<u32> = (0..n * p).map(|i| (i * 13 % 29) as u32).collect();
        let sampling = Sampling::new(0.9, if layers == 2 { 7 } else { 0 }, if h0 { 0.9 } else { 1.0 }).unwrap();
        let rngs: Vec<Sfc32> = (0..n as u32).map(|i| Sfc32::new(100 + i)).collect();
        let mut all = m.sample_session(None, &prime, n, rngs.clone(), sampling).unwrap();
        // Taken in pieces of different sizes: 1 + 12 + 27.
        let mut got = vec![Vec::new(); n];
        for take in [1, 12, 27] {
            let out = m.sample_next(&mut all, take).unwrap();
            for (r, g) in got.iter_mut().enumerate() {
                g.extend_from_slice(&out[r * take..(r + 1) * take]);
            }
        }
        for r in 0..n {
            let mut one = m.sample_session(None, &prime[r * p..(r + 1) * p], 1, vec![rngs[r]], sampling).unwrap();
            let alone = m.sample_next(&mut one, len).unwrap();
            assert_eq!(alone, got[r], "{cell:?} L{layers}: stream {r} draws differ alone");
            // The session's loop is the step-by-step loop: step, draw, feed the draw.
            let mut rng = rngs[r];
            let (mut state, mut logits) = (None::<Vec<f32>>, Vec::new());
            for &t in &prime[r * p..(r + 1) * p] {
                let (s, l) = m.step(state.as_deref(), &[t]).unwrap();
                state = Some(s);
                logits = l;
            }
            for (i, &want) in got[r].iter().enumerate() {
                let d = draw_reference(&logits, &sampling, &mut rng) as u32;
                assert_eq!(d, want, "{cell:?} L{layers}: stream {r} draw {i}");
                let (s, l) = m.step(state.as_deref(), &[d]).unwrap();
                state = Some(s);
                logits = l;
            }
        }
    }
}

#[test]
fn sample_logits_greedy_top_k_and_top_p() {
    let logits = [0.5f32, 2.0, -1.0, 2.0, 1.5];
    let mut rng = Sfc32::new(1);
    let mut sc = SampleScratch::default();
    // Greedy: the first maximum, no draw consumed.
    let greedy = Sampling::new(0.0, 0, 1.0).unwrap();
    let before = rng;
    assert_eq!(sample_logits(&logits, &greedy, &mut rng, &mut sc), 1);
    assert_eq!(rng, before);
    // top-k 1 keeps the first of the tied maxima (the sort is stable).
    let k1 = Sampling::new(1.0, 1, 1.0).unwrap();
    for _ in 0..50 {
        assert_eq!(sample_logits(&logits, &k1, &mut rng, &mut sc), 1);
    }
    // top-k 3: only the three largest, each drawn.
    let k3 = Sampling::new(1.0, 3, 1.0).unwrap();
    let mut seen = [0; 5];
    for _ in 0..2000 {
        seen[sample_logits(&logits, &k3, &mut rng, &mut sc)] += 1;
    }
    assert_eq!((seen[0], seen[2]), (0, 0), "{seen:?}");
    assert!(seen[1] > 0 && seen[3] > 0 && seen[4] > 0, "{seen:?}");
    // top-p that the two tied maxima already exceed.
    let p = Sampling::new(1.0, 0, 0.5).unwrap();
    for _ in 0..200 {
        let i = sample_logits(&logits, &p, &mut rng, &mut sc);
        assert!(i == 1 || i == 3, "{i}");
    }
    assert!(Sampling::new(-1.0, 0, 1.0).is_err());
    assert!(Sampling::new(f64::NAN, 0, 1.0).is_err());
    assert!(Sampling::new(1.0, 0, 0.0).is_err());
    assert!(Sampling::new(1.0, 0, 1.5).is_err());
}

#[test]
fn sample_session_checks_its_arguments() {
    let m = model(CellKind::Gru, 1, false, 1);
    let o = Sampling::new(1.0, 0, 1.0).unwrap();
    let r = |n: u32| (0..n).map(Sfc32::new).collect::<Vec<_>>();
    assert!(m.sample_session(None, &[], 1, r(1), o).is_err());
    assert!(m.sample_session(None, &[1, 2, 3], 2, r(2), o).is_err());
    assert!(m.sample_session(None, &[1, 2], 2, r(1), o).is_err());
    assert!(m.sample_session(None, &[1, 29], 2, r(2), o).is_err());
    assert!(m.sample_session(Some(&[0.0; 3]), &[1], 1, r(1), o).is_err());
    assert!(m.sample_session(None, &[1], 0, r(0), o).is_err());
    let mut s = m.sample_session(None, &[1, 2], 2, r(2), o).unwrap();
    assert_eq!(m.sample_next(&mut s, 0).unwrap(), Vec::<u32>::new());
    assert_eq!(m.sample_next(&mut s, 3).unwrap().len(), 6);
    assert_eq!(s.streams(), 2);
    assert_eq!(s.state().len(), 2 * 40);
}

/// f32 against f32 over a whole gradient: only summation orders differ.
fn assert_grads_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    crate::test_values::assert_close_to_scale(what, got, want, tol as f64, 1e-6);
}

/// The hand-written CPU training pass gives the loss, every parameter's gradient and dL/d(initial
/// state) of candle's autograd over the tensor graph: every cell, stacks, the learned h0, heads
/// predicting ahead with unscored positions, from zeros and from a given state, and more positions
/// than one block of the head.
#[test]
fn the_training_pass_matches_the_tensor_graph() {
    for (cell, layers, h0) in CASES {
        let ahead = if layers == 2 { 3 } else { 1 };
        let m = model(cell, layers, h0, ahead);
        for (batch, seq) in [(3, 7), (4, 150)] {
            let rows = batch * seq;
            let ids: Vec<u32> = (0..rows).map(|i| ((i * 7 + 3) % 29) as u32).collect();
            let mut targets: Vec<u32> = (0..ahead * rows).map(|i| ((i * 11 + 5) % 29) as u32).collect();
            for (i, t) in targets.iter_mut().enumerate().skip(rows) {
                if i % 5 == 0 {
                    *t = super::IGNORE;
                }
            }
            let given = values(layers * batch * m.cfg.state_len(), 5, 0.5);
            for state in [None, Some(&given[..])] {
                let what =
                    format!("{cell:?} L{layers} h0={h0} ahead {ahead} B{batch} T{seq} state={}", state.is_some());
                let got = m.loss_and_grads_by(GradPath::WrittenOut, &ids, &targets, batch, seq, state).unwrap();
                let want = m.loss_and_grads_by(GradPath::Graph, &ids, &targets, batch, seq, state).unwrap();
                assert!(
                    (got.loss - want.loss).abs() <= 1e-6 * want.loss.abs(),
                    "{what}: loss {} vs {}",
                    got.loss,
                    want.loss
                );
                for ((name, g), (wname, w)) in got.grads.iter().zip(&want.grads) {
                    assert_eq!(name, wname);
                    assert_grads_close(&format!("{what} {name}"), g, w, 2e-5);
                }
                assert_grads_close(&format!("{what} dh0"), &got.dh0, &want.dh0, 2e-5);
                assert!(got.grads.iter().all(|(_, g)| g.iter().all(|v| v.is_finite())));
            }
        }
    }
}

/// A training step carries the final state the tensor graph gives for the same batch and weights.
#[test]
fn a_training_step_carries_the_final_state_of_its_batch() {
    for (cell, layers, h0) in CASES {
        let mut m = model(cell, layers, h0, 1);
        let (batch, seq) = (3, 9);
        let ids: Vec<u32> = (0..batch * seq).map(|i| ((i * 5 + 1) % 29) as u32).collect();
        let targets: Vec<u32> = (0..batch * seq).map(|i| ((i * 3 + 2) % 29) as u32).collect();
        let (_, want) = m.nll(&ids, &targets, batch, seq, None).unwrap();
        m.train_step(&ids, &targets, batch, seq, &AdamWConfig::default()).unwrap();
        let (b, got) = m.carry().unwrap();
        assert_eq!(b, batch);
        assert!(same_bits(&got, &want), "{cell:?} L{layers}: the carried state differs");
    }
}
