//! Image captioning in the manner of "Show and Tell" (Vinyals et al. 2015): a small CNN encodes a
//! grayscale picture into the initial state of a recurrent decoder (`h0: 'external'`), which then
//! generates the caption word by word.
//!
//! ```text
//! pixels [B, S, S] / 255 → for each block i = 1..K:
//!     encoder.conv{i}: 3×3 conv (stride 1, zero padding 1, C_{i−1} → C_i channels) → ReLU → 2×2 mean pool
//!   → flatten [B, (S/2^K)² · C_K]   (channels-last: index (y, x, c), so a feature keeps its place)
//!   → bridge.{l}: decoder layer l's initial state s0_l = tanh(W_l · features + b_l)   (h, then c for an LSTM)
//! caption → tgt_embedding → decoder (L layers, from s0) → head → softmax over words   ([`Decoder`])
//! ```
//! On the 56×56 caption canvases with the default three blocks: 56 → 28 → 14 → 7, so the bridge reads
//! 7·7·C_3 features, one 8×8-pixel patch per spatial position; a caption names places ("on the top
//! left"), which is why the features are flattened and not averaged over space.
//!
//! Pooling is the mean of each 2×2 window rather than its maximum: canvases have large exactly-uniform
//! regions (empty cells and background are 0), where a max pool's four inputs tie and its gradient is
//! ambiguous; the mean has one gradient everywhere, which the float64 reference reproduces exactly.
//! The convolutions are the fused channels-last op of the flows ([`conv3x3_nhwc`]).
//!
//! Parameter names are PyTorch's: `encoder.conv{i}.weight [C_i, C_{i−1}, 3, 3]`, `encoder.conv{i}.bias`
//! (i from 1, C_0 = 1), `bridge.{l}.weight [S_state, F]`, `bridge.{l}.bias`, then the decoder's
//! `tgt_embedding.weight`, `decoder.weight_ih_l0`, …, `head.weight`, `head.bias`. (A PyTorch port
//! keeping NCHW must permute to NHWC before flattening, or permute the bridge's columns.)
//!
//! Training is one call per batch (forward, masked cross-entropy, backward, clipping, AdamW), with
//! scheduled sampling inside the step exactly as for the encoder–decoder of tokens.

use crate::device::Dev;
use crate::flow::conv::conv3x3_nhwc;
use crate::optim::AdamWConfig;
use crate::params::{check_layer_counts, NamedGrads, ParamSpec, ParamStore};
use crate::rnn::CellKind;
use crate::seq2seq::decoder::{flat, Decoder, DecoderBatch, DecoderConfig, EOS};
use crate::seq2seq::Seq2SeqStep;
use candle_core::{bail, DType, Result, Tensor};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionConfig {
    /// Words, PAD, BOS and EOS included.
    pub vocab: usize,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub cell: CellKind,
    /// Side of the square grayscale input in pixels; divisible by 2^(number of blocks).
    pub image: usize,
    /// Output channels of each conv block (one 2×2 pool per block).
    pub channels: Vec<usize>,
}

impl CaptionConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in
            [("embed", self.embed), ("hidden", self.hidden), ("layers", self.layers), ("image", self.image)]
        {
            if v == 0 {
                bail!("caption config: {name} must be at least 1");
            }
        }
        check_layer_counts("caption", &[("layers", self.layers), ("conv blocks", self.channels.len())])?;
        if self.vocab <= EOS as usize + 1 {
            bail!("caption config: the vocabulary must hold PAD, BOS, EOS and at least one word, got {}", self.vocab);
        }
        if self.channels.is_empty() || self.channels.contains(&0) {
            bail!(
                "caption config: channels must list at least one block of at least 1 channel, got {:?}",
                self.channels
            );
        }
        let k = self.channels.len();
        if k >= usize::BITS as usize || !self.image.is_multiple_of(1 << k) {
            bail!("caption config: image side {} is not divisible by 2^{k} (one 2×2 pool per block)", self.image);
        }
        Ok(())
    }

    /// Features the bridge reads: (S / 2^K)² · C_K.
    pub fn features(&self) -> usize {
        let side = self.image >> self.channels.len();
        side * side * self.channels.last().copied().unwrap_or(0)
    }

    pub fn decoder(&self) -> DecoderConfig {
        DecoderConfig {
            vocab: self.vocab,
            embed: self.embed,
            hidden: self.hidden,
            layers: self.layers,
            cell: self.cell,
        }
    }
}

pub struct Captioner {
    pub cfg: CaptionConfig,
    store: ParamStore,
    /// `(weight, bias)` variables of each conv block.
    convs: Vec<(usize, usize)>,
    /// `(weight, bias)` variables of each layer's bridge.
    bridge: Vec<(usize, usize)>,
    decoder: Decoder,
}

/// `x [N, H, W, C]` ↦ the mean of each 2×2 window, `[N, H/2, W/2, C]`.
fn mean_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.reshape((n, h / 2, 2, w / 2, 2, c))?.sum(4)?.sum(2)? * 0.25
}

impl Captioner {
    /// A model with all parameters zero; callers load an initialisation with [`ParamStore::set_param`].
    pub fn new(cfg: CaptionConfig, dev: Dev) -> Result<Self> {
        cfg.validate()?;
        let device = dev.device()?;
        let mut specs = Vec::new();
        let mut var = 0;
        let mut pair = |specs: &mut Vec<ParamSpec>, name: String, w: Vec<usize>, b: usize| {
            specs.push(ParamSpec { name: format!("{name}.weight"), shape: w, var, offset: 0 });
            specs.push(ParamSpec { name: format!("{name}.bias"), shape: vec![b], var: var + 1, offset: 0 });
            var += 2;
            (var - 2, var - 1)
        };
        let mut convs = Vec::new();
        let mut cin = 1;
        for (i, &cout) in cfg.channels.iter().enumerate() {
            convs.push(pair(&mut specs, format!("encoder.conv{}", i + 1), vec![cout, cin, 3, 3], cout));
            cin = cout;
        }
        let s = cfg.decoder().state_len();
        let bridge =
            (0..cfg.layers).map(|l| pair(&mut specs, format!("bridge.{l}"), vec![s, cfg.features()], s)).collect();
        let (decoder, _) = Decoder::register(cfg.decoder(), &mut specs, var);
        Ok(Captioner { cfg, store: ParamStore::new(specs, device, "captioner")?, convs, bridge, decoder })
    }

    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    fn var(&self, i: usize) -> &Tensor {
        self.store.vars[i].as_tensor()
    }

    /// `[B, S, S, 1]` inputs in [0, 1] from `batch` images of 8-bit pixels.
    fn images(&self, pixels: &[u8], batch: usize) -> Result<Tensor> {
        let side = self.cfg.image;
        if batch == 0 {
            bail!("images: a batch needs at least one image");
        }
        if pixels.len() != batch * side * side {
            bail!(
                "images: expected {batch} images of {side}×{side} = {} pixels, got {}",
                batch * side * side,
                pixels.len()
            );
        }
        let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        Tensor::from_vec(x, (batch, side, side, 1), &self.store.device)
    }

    /// The decoder's initial state of every layer `[B, S]`, from images `[B, S, S, 1]`.
    fn encode_tensor(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let c = &self.cfg;
        let batch = x.dim(0)?;
        let mut x = x.clone();
        let mut cin = 1;
        for (&(w, b), &cout) in self.convs.iter().zip(&c.channels) {
            let w = self.var(w).reshape((cout, cin, 3, 3))?;
            x = mean_pool2(&conv3x3_nhwc(&x, &w, self.var(b))?.relu()?)?;
            cin = cout;
        }
        // Scaled by 1/√F: see the module comment.
        let features = (x.reshape((batch, c.features()))? * (1.0 / (c.features() as f64).sqrt()))?;
        let s = c.decoder().state_len();
        self.bridge
            .iter()
            .map(|&(w, b)| {
                let w = self.var(w).reshape((s, c.features()))?;
                features.matmul(&w.t()?)?.broadcast_add(self.var(b))?.tanh()
            })
            .collect()
    }

    /// Checks a batch and runs everything up to the loss: `(loss, tokens, mixed inputs)`.
    fn batch_loss(&self, pixels: &[u8], b: &DecoderBatch) -> Result<(Tensor, usize, Vec<u32>)> {
        let x = self.images(pixels, b.batch)?;
        self.decoder.check(&self.store.device, b)?;
        let s0 = self.encode_tensor(&x)?;
        self.decoder.batch_loss(&self.store, &s0, b)
    }

    /// One training step: CNN encoder, bridge, decoder (teacher-forced or scheduled-sampled), mean
    /// cross-entropy over the non-PAD targets, backward, clipping, AdamW. `pixels` holds `b.batch`
    /// images `[S, S]`. A non-finite loss or gradient is an error and leaves every parameter untouched.
    pub fn train_step(&mut self, pixels: &[u8], b: &DecoderBatch, cfg: &AdamWConfig) -> Result<Seq2SeqStep> {
        crate::params::check_lr(cfg)?;
        let (loss, tokens, inputs) = self.batch_loss(pixels, b)?;
        let stats = self.store.train_step(&loss, cfg)?;
        Ok(Seq2SeqStep { stats, tokens, inputs })
    }

    /// The mean loss, its gradient for every parameter and the decoder inputs fed; changes nothing.
    pub fn loss_and_grads(&self, pixels: &[u8], b: &DecoderBatch) -> Result<(f64, NamedGrads, Vec<u32>)> {
        let (loss, _, inputs) = self.batch_loss(pixels, b)?;
        let grads = self.store.named_grads(&loss.backward()?)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads, inputs))
    }

    /// Summed NLL (nats) of the non-PAD targets under teacher forcing, and their count.
    pub fn nll(&self, pixels: &[u8], b: &DecoderBatch) -> Result<(f64, usize)> {
        let (loss, tokens, _) = self.batch_loss(pixels, &DecoderBatch { sampling: None, ..*b })?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * tokens as f64, tokens))
    }

    /// The decoder's initial state `[L, B, S]` for `batch` images (no gradient).
    pub fn encode(&self, pixels: &[u8], batch: usize) -> Result<Vec<f32>> {
        flat(&self.encode_tensor(&self.images(pixels, batch)?)?)
    }

    /// One decoder step of `N` hypotheses: feeds `tokens [N]` from `state [L, N, S]` and returns the
    /// new state and the log-probabilities `[N, V]` of the next word.
    pub fn decode_step(&self, state: &[f32], tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        self.decoder.decode_step(&self.store, state, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq2seq::{BOS, PAD};

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn model(cell: CellKind) -> Captioner {
        let cfg = CaptionConfig { vocab: 8, embed: 5, hidden: 6, layers: 2, cell, image: 8, channels: vec![3, 4] };
        let mut m = Captioner::new(cfg, Dev::Cpu).unwrap();
        for (i, s) in m.params().specs().to_vec().into_iter().enumerate() {
            m.params_mut().set_param(&s.name, &values(s.len(), 11 + i as u64, 0.5)).unwrap();
        }
        m
    }

    /// Two 8×8 images; captions of lengths 4 and 2 (EOS, then PAD).
    fn batch() -> (Vec<u8>, Vec<u32>, Vec<u32>) {
        let pixels: Vec<u8> = (0..128u32).map(|i| ((i * 37) % 256) as u8).collect();
        let tgt = vec![3, 4, 5, 6, EOS, 7, 3, EOS, PAD, PAD];
        let dec_in = vec![BOS, 3, 4, 5, 6, BOS, 7, 3, PAD, PAD];
        (pixels, dec_in, tgt)
    }

    #[test]
    fn parameter_names_follow_pytorch() {
        let m = model(CellKind::Lstm);
        let names: Vec<String> = m.params().specs().iter().map(|s| s.name.clone()).collect();
        assert_eq!(
            &names[..6],
            [
                "encoder.conv1.weight",
                "encoder.conv1.bias",
                "encoder.conv2.weight",
                "encoder.conv2.bias",
                "bridge.0.weight",
                "bridge.0.bias"
            ]
        );
        assert_eq!(names[8], "tgt_embedding.weight");
        assert_eq!(names.last().unwrap(), "head.bias");
        let shape = |n: &str| m.params().specs().iter().find(|s| s.name == n).unwrap().shape.clone();
        assert_eq!(shape("encoder.conv2.weight"), vec![4, 3, 3, 3]);
        // 8 → 4 → 2 pixels a side, 4 channels: 16 features; the LSTM's state is (h, c).
        assert_eq!(shape("bridge.1.weight"), vec![12, 16]);
    }

    #[test]
    fn all_ones_flips_are_teacher_forcing_bit_for_bit() {
        for cell in CellKind::ALL {
            let m = model(cell);
            let (px, dec_in, tgt) = batch();
            let tf = DecoderBatch { dec_in: &dec_in, targets: &tgt, batch: 2, len: 5, sampling: None };
            let (l0, g0, in0) = m.loss_and_grads(&px, &tf).unwrap();
            let u: Vec<f32> = values(10, 3, 0.5).iter().map(|v| v.abs()).collect();
            let (l1, g1, in1) = m.loss_and_grads(&px, &DecoderBatch { sampling: Some((&[1; 10], &u)), ..tf }).unwrap();
            assert_eq!(l0.to_bits(), l1.to_bits());
            assert_eq!(in0, in1);
            for ((n0, a), (_, b)) in g0.iter().zip(&g1) {
                assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{n0} differs");
            }
            assert!(g0[0].1.iter().any(|&g| g != 0.0), "the first conv gets a gradient");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let m = model(CellKind::Gru);
        let (px, dec_in, tgt) = batch();
        let b = DecoderBatch { dec_in: &dec_in, targets: &tgt, batch: 2, len: 5, sampling: None };
        let err = |r: Result<(f64, NamedGrads, Vec<u32>)>| r.expect_err("an error").to_string();
        assert!(err(m.loss_and_grads(&px[..100], &b)).contains("expected 2 images of 8×8"));
        let mut bad = tgt.clone();
        bad[0] = 8;
        assert!(err(m.loss_and_grads(&px, &DecoderBatch { targets: &bad, ..b })).contains("outside the vocabulary"));
        let cfg = CaptionConfig {
            vocab: 8,
            embed: 5,
            hidden: 6,
            layers: 1,
            cell: CellKind::Gru,
            image: 6,
            channels: vec![3, 4],
        };
        assert!(Captioner::new(cfg, Dev::Cpu).err().unwrap().to_string().contains("not divisible by 2^2"));
    }
}
