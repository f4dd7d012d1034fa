//! The Pixel-RNN model: its parameters under PyTorch `state_dict` names, the training step (forward,
//! mean NLL per image, backward, clipping, AdamW in one call), the NLL of each image, the logits of
//! every pixel, and sampling.
//!
//! Variables (each the input of one fused op): 0 `input_conv.{weight, bias}`; 1 + l the row layer l,
//! `rows.{l}.{weight_is, bias_is, weight_ss, bias_ss[, label_bias]}`; L + 1 the head,
//! `out1.{weight, bias}`, `out2.{weight, bias}`. Shapes as `src/backend/pixel-types.ts` lists them.

use super::head::{head_forward, head_nll_op, pixel_nll, HeadDims, HeadWeights, PixelOutput};
use super::input_conv::{conv_forward, input_conv, ConvDims};
use super::row::{row_forward, row_layer, RowDims, RowWeights, ROW_KERNEL};
use super::sample::{sample_images, SampleRequest};
use super::INPUT_KERNEL;
use crate::device::Dev;
use crate::optim::AdamWConfig;
use crate::params::{check_layer_counts, NamedGrads, ParamSpec, ParamStore, StepStats};
use crate::rnn::CellKind;
use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelConfig {
    /// [`CellKind::Lstm`] (the paper's Row LSTM) or [`CellKind::Gru`].
    pub cell: CellKind,
    /// Feature maps H of every layer.
    pub hidden: usize,
    /// Row layers L.
    pub layers: usize,
    pub rows: usize,
    pub cols: usize,
    pub output: PixelOutput,
    /// Classes K of the label bias; `None` for an unconditional model.
    pub classes: Option<usize>,
}

impl PixelConfig {
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.cell, CellKind::Lstm | CellKind::Gru) {
            bail!("pixel model config: cell must be lstm or gru, not {}", self.cell.name());
        }
        for (name, v) in [("hidden", self.hidden), ("layers", self.layers), ("rows", self.rows), ("cols", self.cols)] {
            if v == 0 {
                bail!("pixel model config: {name} must be at least 1");
            }
        }
        if self.classes == Some(0) {
            bail!("pixel model config: classes must be at least 1 (leave it out for an unconditional model)");
        }
        check_layer_counts("pixel model", &[("layers", self.layers)])
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    pub fn row_dims(&self, batch: usize) -> RowDims {
        let (rows, cols, hidden) = (self.rows, self.cols, self.hidden);
        RowDims { cell: self.cell, batch, rows, cols, hidden, classes: self.classes.unwrap_or(0) }
    }

    pub fn conv_dims(&self, images: usize) -> ConvDims {
        ConvDims { images, rows: self.rows, cols: self.cols, hidden: self.hidden }
    }

    pub fn head_dims(&self, images: usize) -> HeadDims {
        HeadDims { rows: images * self.pixels(), hidden: self.hidden, output: self.output }
    }

    /// Parameter names and shapes, variable by variable.
    fn specs(&self) -> Vec<ParamSpec> {
        let (h, g, k) = (self.hidden, self.cell.gates() * self.hidden, ROW_KERNEL);
        let mut vars: Vec<Vec<(String, Vec<usize>)>> = vec![vec![
            ("input_conv.weight".into(), vec![h, 1, INPUT_KERNEL, INPUT_KERNEL]),
            ("input_conv.bias".into(), vec![h]),
        ]];
        for l in 0..self.layers {
            let mut v = vec![
                (format!("rows.{l}.weight_is"), vec![g, h, 1, k]),
                (format!("rows.{l}.bias_is"), vec![g]),
                (format!("rows.{l}.weight_ss"), vec![g, h, 1, k]),
                (format!("rows.{l}.bias_ss"), vec![g]),
            ];
            if let Some(classes) = self.classes {
                v.push((format!("rows.{l}.label_bias"), vec![classes, g]));
            }
            vars.push(v);
        }
        let o = self.output.width();
        vars.push(vec![
            ("out1.weight".into(), vec![h, h, 1, 1]),
            ("out1.bias".into(), vec![h]),
            ("out2.weight".into(), vec![o, h, 1, 1]),
            ("out2.bias".into(), vec![o]),
        ]);
        let mut specs = Vec::new();
        for (var, parts) in vars.into_iter().enumerate() {
            let mut offset = 0;
            for (name, shape) in parts {
                let n: usize = shape.iter().product();
                specs.push(ParamSpec { name, shape, var, offset });
                offset += n;
            }
        }
        specs
    }
}

pub struct PixelModel {
    pub cfg: PixelConfig,
    store: ParamStore,
}

impl PixelModel {
    /// A model with all parameters zero; callers load an initialisation with [`ParamStore::set_param`].
    pub fn new(cfg: PixelConfig, dev: Dev) -> Result<Self> {
        cfg.validate()?;
        Ok(PixelModel { cfg, store: ParamStore::new(cfg.specs(), dev.device()?, "pixel model")? })
    }

    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// Checks `x [batch, R, C]` (finite model inputs) and returns it as a tensor.
    fn images(&self, x: &[f32], batch: usize) -> Result<Tensor> {
        let (r, c) = (self.cfg.rows, self.cfg.cols);
        if batch == 0 || x.len() != batch * r * c {
            bail!("images hold {} values; [batch {batch}, rows {r}, cols {c}] needs {}", x.len(), batch * r * c);
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            bail!("image value {i} is not finite ({})", x[i]);
        }
        Tensor::from_slice(x, (batch, r, c), &self.store.device)
    }

    /// Checks the targets `[batch, R, C]`: integer pixel values in the output's range.
    fn targets(&self, t: &[u8], batch: usize) -> Result<Vec<u32>> {
        let want = batch * self.cfg.pixels();
        if t.len() != want {
            bail!(
                "targets hold {} values; [batch {batch}, rows {}, cols {}] needs {want}",
                t.len(),
                self.cfg.rows,
                self.cfg.cols
            );
        }
        check_values(self.cfg.output, t, "target")?;
        Ok(t.iter().map(|&v| v as u32).collect())
    }

    /// Checks `labels [batch]`: given exactly when the model has classes, each in 0…K−1.
    pub fn labels(&self, labels: Option<&[u32]>, batch: usize) -> Result<Option<Vec<usize>>> {
        match (self.cfg.classes, labels) {
            (None, None) => Ok(None),
            (None, Some(_)) => bail!("this pixel model has no classes, but labels were given"),
            (Some(k), None) => bail!("this pixel model is class-conditional ({k} classes): labels are required"),
            (Some(k), Some(l)) => {
                if l.len() != batch {
                    bail!("labels hold {} values; [batch {batch}] needs {batch}", l.len());
                }
                if let Some(b) = l.iter().position(|&v| v as usize >= k) {
                    bail!("label {b} is {}, out of range: classes are 0…{}", l[b], k - 1);
                }
                Ok(Some(l.iter().map(|&v| v as usize).collect()))
            }
        }
    }

    /// The NLL of every pixel, `[B·R·C]`, as a graph over `params` (one tensor per variable, f32 or
    /// f64 like `x`).
    pub(crate) fn nll_rows(
        &self,
        params: &[Tensor],
        x: &Tensor,
        targets: &Tensor,
        labels: Option<&[usize]>,
    ) -> Result<Tensor> {
        let PixelConfig { cell, hidden, layers, .. } = self.cfg;
        let classes = self.cfg.classes.unwrap_or(0);
        let mut y = input_conv(x, &params[0], hidden)?;
        for l in 0..layers {
            y = row_layer(cell, &y, &params[1 + l], classes, labels)?;
        }
        let (b, r, c, h) = y.dims4()?;
        head_nll_op(self.cfg.output, &y.reshape((b * r * c, h))?, &params[layers + 1], targets)
    }

    fn var_tensors(&self) -> Vec<Tensor> {
        self.store.vars.iter().map(|v| v.as_tensor().clone()).collect()
    }

    /// The training loss: mean over the batch of each image's summed NLL (nats/image).
    fn loss(&self, x: &[f32], targets: &[u8], labels: Option<&[u32]>, batch: usize) -> Result<Tensor> {
        let xt = self.images(x, batch)?;
        let t = Tensor::from_vec(self.targets(targets, batch)?, batch * self.cfg.pixels(), &self.store.device)?;
        let labels = self.labels(labels, batch)?;
        let nll = self.nll_rows(&self.var_tensors(), &xt, &t, labels.as_deref())?;
        nll.sum_all()?.affine(1.0 / batch as f64, 0.0)
    }

    /// One training step on `batch` images: `x [B, R, C]` model inputs, `targets [B, R, C]` pixel
    /// values, `labels [B]` exactly when the model has classes. A non-finite loss or gradient is an
    /// error and changes nothing.
    pub fn train_step(
        &mut self,
        x: &[f32],
        targets: &[u8],
        labels: Option<&[u32]>,
        batch: usize,
        cfg: &AdamWConfig,
    ) -> Result<StepStats> {
        crate::params::check_lr(cfg)?;
        let loss = self.loss(x, targets, labels, batch)?;
        self.store.train_step(&loss, cfg)
    }

    /// The loss (nats/image) and its gradient for every parameter; changes nothing.
    pub fn loss_and_grads(
        &self,
        x: &[f32],
        targets: &[u8],
        labels: Option<&[u32]>,
        batch: usize,
    ) -> Result<(f64, NamedGrads)> {
        let loss = self.loss(x, targets, labels, batch)?;
        let grads = self.store.named_grads(&loss.backward()?)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }

    /// Every variable's values on the host, for the no-gradient paths.
    fn host_params(&self) -> Result<Vec<Vec<f32>>> {
        self.store.vars.iter().map(|v| v.as_tensor().to_vec1::<f32>()).collect()
    }

    /// y_L `[B·R·C, H]` of checked images.
    fn top(&self, p: &[Vec<f32>], x: &[f32], labels: Option<&[usize]>, batch: usize) -> Vec<f32> {
        let mut y = conv_forward(&self.cfg.conv_dims(batch), x, &p[0]);
        let d = self.cfg.row_dims(batch);
        for l in 0..self.cfg.layers {
            y = row_forward(&d, &y, &RowWeights::unpack(&d, &p[1 + l]), labels, false).0;
        }
        y
    }

    /// Logits `[B, R, C, O]` of every pixel, each from the pixels before it.
    pub fn forward(&self, x: &[f32], labels: Option<&[u32]>, batch: usize) -> Result<Vec<f32>> {
        self.images(x, batch)?;
        let labels = self.labels(labels, batch)?;
        let p = self.host_params()?;
        let y = self.top(&p, x, labels.as_deref(), batch);
        let w = HeadWeights::unpack(self.cfg.hidden, self.cfg.output, &p[self.cfg.layers + 1]);
        Ok(head_forward(&self.cfg.head_dims(batch), &y, &w).1)
    }

    /// Each image's summed NLL in nats, `[B]`; changes nothing.
    pub fn nll(&self, x: &[f32], targets: &[u8], labels: Option<&[u32]>, batch: usize) -> Result<Vec<f64>> {
        let logits = self.forward(x, labels, batch)?;
        let t = self.targets(targets, batch)?;
        let (o, d) = (self.cfg.output.width(), self.cfg.pixels());
        let out = (0..batch)
            .into_par_iter()
            .map(|b| {
                let mut grad = vec![0f32; o];
                (b * d..(b + 1) * d)
                    .map(|r| pixel_nll(self.cfg.output, &logits[r * o..(r + 1) * o], t[r] as usize, &mut grad))
                    .sum()
            })
            .collect();
        Ok(out)
    }

    /// `n` images `[n, R, C]` of pixel values drawn in raster order, pixel (s, i, j) from
    /// `uniforms[(s·R + i)·C + j]`; the first `top_rows` rows of each are given in `top [n, top_rows, C]`.
    pub fn sample(
        &self,
        n: usize,
        uniforms: &[f32],
        labels: Option<&[u32]>,
        top_rows: usize,
        top: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let (r, c) = (self.cfg.rows, self.cfg.cols);
        if uniforms.len() != n * r * c {
            bail!("sample: uniforms hold {} values; [n {n}, rows {r}, cols {c}] needs {}", uniforms.len(), n * r * c);
        }
        if let Some(i) = uniforms.iter().position(|u| !u.is_finite()) {
            bail!("sample: uniform {i} is not finite ({})", uniforms[i]);
        }
        if top_rows > r {
            bail!("sample: topRows {top_rows} is more than the {r} rows of an image");
        }
        let top = match top {
            Some(t) if t.len() == n * top_rows * c => t,
            None if top_rows == 0 => &[],
            _ => bail!("sample: top must hold [n {n}, topRows {top_rows}, cols {c}] pixel values"),
        };
        check_values(self.cfg.output, top, "given pixel")?;
        let labels = if n == 0 { None } else { self.labels(labels, n)? };
        if n == 0 {
            return Ok(Vec::new());
        }
        let p = self.host_params()?;
        let req = SampleRequest { n, uniforms, labels: labels.as_deref(), top_rows, top };
        Ok(sample_images(&self.cfg, &p, &req))
    }
}

/// Pixel values in the output's range (0…255, or 0/1), else an error naming the first that is not.
fn check_values(output: PixelOutput, v: &[u8], what: &str) -> Result<()> {
    let levels = output.levels();
    if let Some(i) = v.iter().position(|&x| x as usize >= levels) {
        bail!("{what} {i} is {}, out of range: a {} pixel is 0…{}", v[i], output.name(), levels - 1);
    }
    Ok(())
}
