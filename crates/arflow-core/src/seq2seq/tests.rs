//! The encoder–decoder's own invariants; its numbers are checked against the pure-TypeScript float64
//! reference (`__test__/seq2seq-native.test.ts`), whose gradients are checked by finite differences.

use super::*;

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn model(cell: CellKind, bidirectional: bool) -> Seq2Seq {
    let cfg = Seq2SeqConfig { src_vocab: 9, tgt_vocab: 8, embed: 5, hidden: 6, layers: 2, cell, bidirectional };
    let mut m = Seq2Seq::new(cfg, Dev::Cpu).unwrap();
    for (i, s) in m.params().specs().to_vec().into_iter().enumerate() {
        m.params_mut().set_param(&s.name, &values(s.len(), 7 + i as u64, 0.5)).unwrap();
    }
    m
}

/// Two rows: sources of length 4; targets of lengths 5 and 3 (EOS, then PAD).
fn batch() -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let src = vec![3, 4, 5, 6, 8, 7, 3, 3];
    let tgt = vec![3, 4, 5, 6, EOS, 7, 3, EOS, PAD, PAD];
    let dec_in = vec![BOS, 3, 4, 5, 6, BOS, 7, 3, PAD, PAD];
    (src, dec_in, tgt)
}

#[test]
fn parameter_names_follow_pytorch() {
    let m = model(CellKind::Lstm, true);
    let names: Vec<String> = m.params().specs().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names[0], "src_embedding.weight");
    assert_eq!(
        &names[1..5],
        ["encoder.weight_ih_l0", "encoder.weight_hh_l0", "encoder.bias_ih_l0", "encoder.bias_hh_l0"]
    );
    assert_eq!(names[5], "encoder.weight_ih_l0_reverse");
    let shape = |n: &str| m.params().specs().iter().find(|s| s.name == n).unwrap().shape.clone();
    // Layer 1 of a bidirectional encoder reads both directions' h; the bridge reads both directions' (h, c).
    assert_eq!(shape("encoder.weight_ih_l1"), vec![24, 12]);
    assert_eq!(shape("bridge.0.weight"), vec![12, 24]);
    assert_eq!(shape("decoder.weight_ih_l1"), vec![24, 6]);
    assert_eq!(names.last().unwrap(), "head.bias");
}

#[test]
fn all_ones_flips_are_teacher_forcing_bit_for_bit() {
    for cell in CellKind::ALL {
        let m = model(cell, true);
        let (src, dec_in, tgt) = batch();
        let (l0, g0, in0) = m.loss_and_grads(&src, &dec_in, &tgt, 2, 4, 5, None).unwrap();
        let flips = vec![1u8; 10];
        let u = values(10, 3, 0.5).iter().map(|v| v.abs()).collect::<Vec<_>>();
        let (l1, g1, in1) = m.loss_and_grads(&src, &dec_in, &tgt, 2, 4, 5, Some((&flips, &u))).unwrap();
        assert_eq!(l0.to_bits(), l1.to_bits());
        assert_eq!(in0, in1);
        for ((n0, a), (_, b)) in g0.iter().zip(&g1) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{n0} differs");
        }
    }
}

#[test]
fn free_running_feeds_the_models_own_samples() {
    let m = model(CellKind::Gru, false);
    let (src, dec_in, tgt) = batch();
    let flips = vec![0u8; 10];
    let u: Vec<f32> = values(10, 5, 1.0).iter().map(|v| v.abs() * 0.999).collect();
    let (_, _, mixed) = m.loss_and_grads(&src, &dec_in, &tgt, 2, 4, 5, Some((&flips, &u))).unwrap();
    // Recompute with the step API: the sample at t+1 comes from the prediction after feeding t.
    let mut state = m.encode(&src, 2, 4).unwrap();
    for t in 0..4 {
        let tokens = [mixed[t], mixed[5 + t]];
        let (next, log_probs) = m.decode_step(&state, &tokens).unwrap();
        state = next;
        for b in 0..2 {
            let at = b * 5 + t + 1;
            let want =
                if dec_in[at] == PAD { PAD } else { sample_inverse_cdf(&log_probs[b * 8..(b + 1) * 8], u[at] as f64) };
            assert_eq!(mixed[at], want, "row {b}, position {}", t + 1);
        }
    }
    assert_eq!(mixed[0], BOS);
    assert_ne!(&mixed[1..5], &dec_in[1..5], "free running should not reproduce the ground truth here");
}

#[test]
fn padded_positions_change_nothing() {
    let m = model(CellKind::Lstm, true);
    let (src, dec_in, tgt) = batch();
    let (l0, g0, _) = m.loss_and_grads(&src, &dec_in, &tgt, 2, 4, 5, None).unwrap();
    // A different input after the second row's EOS (its targets there are PAD).
    let mut other = dec_in.clone();
    other[9] = 5;
    let (l1, g1, _) = m.loss_and_grads(&src, &other, &tgt, 2, 4, 5, None).unwrap();
    assert_eq!(l0.to_bits(), l1.to_bits());
    for ((n, a), (_, b)) in g0.iter().zip(&g1) {
        // The embedding row of the changed token gets no gradient through a masked position either.
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-7), "{n} differs");
    }
}

#[test]
fn inverse_cdf_picks_the_first_token_past_u() {
    let logits = [0f32.ln(), 1f32.ln(), 2f32.ln(), 1f32.ln()]; // probabilities 0, 0.25, 0.5, 0.25
    assert_eq!(sample_inverse_cdf(&logits, 0.0), 1);
    assert_eq!(sample_inverse_cdf(&logits, 0.24), 1);
    assert_eq!(sample_inverse_cdf(&logits, 0.26), 2);
    assert_eq!(sample_inverse_cdf(&logits, 0.76), 3);
    assert_eq!(sample_inverse_cdf(&logits, 0.999_999_999), 3);
}

#[test]
fn bad_batches_are_errors() {
    let m = model(CellKind::Rnn, false);
    let (src, dec_in, tgt) = batch();
    let err = |r: Result<(f64, NamedGrads, Vec<u32>)>| r.expect_err("an error").to_string();
    assert!(err(m.loss_and_grads(&src, &dec_in, &tgt, 2, 3, 5, None)).contains("source"));
    let mut bad = src.clone();
    bad[0] = 9;
    assert!(err(m.loss_and_grads(&bad, &dec_in, &tgt, 2, 4, 5, None)).contains("outside the vocabulary"));
    let pads = vec![PAD; 10];
    assert!(err(m.loss_and_grads(&src, &dec_in, &pads, 2, 4, 5, None)).contains("every position is PAD"));
    let u = vec![1.0f32; 10];
    assert!(err(m.loss_and_grads(&src, &dec_in, &tgt, 2, 4, 5, Some((&[0; 10], &u)))).contains("[0, 1)"));
    let half = vec![0.5f32; 10];
    assert!(err(m.loss_and_grads(&src, &dec_in, &tgt, 2, 4, 5, Some((&[2; 10], &half)))).contains("flips must be 0"));
    let cfg = Seq2SeqConfig {
        src_vocab: 3,
        tgt_vocab: 8,
        embed: 5,
        hidden: 6,
        layers: 1,
        cell: CellKind::Gru,
        bidirectional: false,
    };
    assert!(Seq2Seq::new(cfg, Dev::Cpu).err().unwrap().to_string().contains("source vocabulary"));
}
