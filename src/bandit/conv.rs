//! The nonlinear bandit's feature network (`--features conv`): convolution layers (3×3, stride
//! 1, no padding, ReLU) over the image, whose flattened output is the input of the first
//! Bernoulli layer. It is deterministic, so the Bernoulli layer's logit gradient (HNCA's credit
//! or REINFORCE's score, the surrogate's derivative with ρ held fixed) is backpropagated into it.
//! Its shapes, parameters, buffers, forward pass and backward pass over the backend operations.

use crate::backend::{grad_variance_slots, Backend, ConvGeom, PerExample};
use crate::rng::{stream, RngKey};

/// The filters' size (the reference's 3×3).
pub const KERNEL: usize = 3;
/// Limits of --conv-layers and --conv-channels.
pub const MAX_LAYERS: usize = 16;
pub const MAX_CHANNELS: usize = 256;

/// The convolution layers' shapes over an image of `rows`×`cols` pixels (one channel): `layers`
/// of `channels` filters, each shrinking the image by KERNEL - 1 pixels a side; or why not.
pub fn conv_geoms(rows: usize, cols: usize, layers: usize, channels: usize) -> Result<Vec<ConvGeom>, String> {
    if layers == 0 || layers > MAX_LAYERS {
        return Err(format!("--conv-layers must be 1 to {MAX_LAYERS}, got {layers}"));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(format!("--conv-channels must be 1 to {MAX_CHANNELS}, got {channels}"));
    }
    let shrink = layers * (KERNEL - 1);
    if rows <= shrink || cols <= shrink {
        let most = (rows.min(cols).saturating_sub(1)) / (KERNEL - 1);
        return Err(format!(
            "--conv-layers {layers}: each {KERNEL}x{KERNEL} convolution shrinks the {rows}x{cols} image by {} pixels, leaving nothing; at most {most} layers fit",
            KERNEL - 1
        ));
    }
    Ok((0..layers)
        .map(|l| ConvGeom {
            height: rows - l * (KERNEL - 1),
            width: cols - l * (KERNEL - 1),
            c_in: if l == 0 { 1 } else { channels },
            c_out: channels,
            k: KERNEL,
        })
        .collect())
}

/// One convolution layer's parameters: weights (k, k, c_in, c_out) and biases (c_out).
pub struct Conv<Buf> {
    pub w: Buf,
    pub bias: Buf,
    pub geom: ConvGeom,
}

impl<Buf> Conv<Buf> {
    pub fn map<Out>(&self, mut f: impl FnMut(&Buf) -> Out) -> Conv<Out> {
        Conv { w: f(&self.w), bias: f(&self.bias), geom: self.geom }
    }
}

/// Uniform weights of variance 1/fan_in (fan_in = k·k·c_in), the scale of the reference's
/// initialisers, and zero biases.
pub fn init(geoms: &[ConvGeom], seed: u64) -> Vec<Conv<Vec<f32>>> {
    geoms
        .iter()
        .enumerate()
        .map(|(l, &geom)| {
            let mut w = vec![0.0f32; geom.weights()];
            fill_fan_in_uniform(&mut w, geom.patch(), RngKey::new(seed, 0, stream::bandit_conv_init(l as u32 + 1)));
            Conv { w, bias: vec![0.0; geom.c_out], geom }
        })
        .collect()
}

/// w ~ U(-r, r) with r = √(3 / fan_in): variance 1/fan_in.
pub fn fill_fan_in_uniform(w: &mut [f32], fan_in: usize, key: RngKey) {
    let r = (3.0 / fan_in as f64).sqrt() as f32;
    key.fill_uniform(0, w);
    w.iter_mut().for_each(|u| *u = (2.0 * *u - 1.0) * r);
}

/// The feature network's buffers for batch size b. Layer c's output is `out[c]` for every
/// layer below the top; the top layer's output is the Bernoulli layer's input (the agent
/// workspace's u[0]), so it is passed in.
pub struct ConvWorkspace<B: Backend> {
    /// The pixels, (b, height, width, 1).
    pub x: B::Buf,
    /// Outputs (b, oh, ow, c_out) of every layer but the top.
    pub out: Vec<B::Buf>,
    /// What a training step needs besides (absent in an evaluation's workspace).
    pub grads: Option<ConvGrads<B>>,
}

/// Per layer: the gradient of its output, then (in place) of its pre-activation, (b, oh, ow,
/// c_out); its per-example weight and bias gradients, (b, k·k·c_in·c_out) and (b, c_out).
pub struct ConvGrads<B: Backend> {
    pub dout: Vec<B::Buf>,
    pub gw: Vec<B::Buf>,
    pub gb: Vec<B::Buf>,
}

impl<B: Backend> ConvWorkspace<B> {
    pub fn new(be: &B, geoms: &[ConvGeom], b: usize, training: bool) -> Self {
        let top = geoms.len() - 1;
        let grads = training.then(|| ConvGrads {
            dout: geoms.iter().map(|g| be.zeros(b * g.out_len())).collect(),
            gw: geoms.iter().map(|g| be.zeros(b * g.weights())).collect(),
            gb: geoms.iter().map(|g| be.zeros(b * g.c_out)).collect(),
        });
        ConvWorkspace { x: be.zeros(b * geoms[0].in_len()), out: geoms[..top].iter().map(|g| be.zeros(b * g.out_len())).collect(), grads }
    }
}

/// Gradient-variance slots of each layer, in order ([`grad_variance_slots`]).
pub fn variance_slots(geoms: &[ConvGeom], b: usize) -> Vec<usize> {
    geoms.iter().map(|g| grad_variance_slots(b, g.weights(), g.c_out, PerExample::Whole)).collect()
}

/// The features of ws.x into `features` (b, oh, ow, c_out of the top layer).
pub fn forward<B: Backend>(be: &B, params: &[Conv<B::Buf>], ws: &mut ConvWorkspace<B>, features: &mut B::Buf, b: usize) {
    let top = params.len() - 1;
    for (c, layer) in params.iter().enumerate() {
        let (below, rest) = ws.out.split_at_mut(c);
        let input = if c == 0 { &ws.x } else { &below[c - 1] };
        let output = if c == top { &mut *features } else { &mut rest[0] };
        be.conv_relu_forward(output, input, &layer.w, &layer.bias, b, layer.geom);
    }
}

/// Backpropagation from the gradient of the features, ws.grads.dout[top] (already written),
/// into every layer's gradients (batch means, into `grads`) and their gradient-variance partial
/// sums, layer c's from slot `first_slots[c]`. `features` is the forward pass's top output.
pub fn backward<B: Backend>(
    be: &B,
    params: &[Conv<B::Buf>],
    ws: &mut ConvWorkspace<B>,
    features: &B::Buf,
    grads: &mut [Conv<B::Buf>],
    partials: &mut B::Array<f64>,
    first_slots: &[usize],
    b: usize,
) {
    let top = params.len() - 1;
    let g = ws.grads.as_mut().expect("a training workspace holds the convolutions' gradients");
    for c in (0..=top).rev() {
        let geom = params[c].geom;
        let output = if c == top { features } else { &ws.out[c] };
        let input = if c == 0 { &ws.x } else { &ws.out[c - 1] };
        let (below, here) = g.dout.split_at_mut(c);
        let dout = &mut here[0];
        be.relu_backward(dout, output, b * geom.out_len());
        be.conv_sample_grads(&mut g.gw[c], &mut g.gb[c], input, dout, b, geom);
        let layer = &mut grads[c];
        be.column_mean(&mut layer.w, &g.gw[c], b, geom.weights());
        be.column_mean(&mut layer.bias, &g.gb[c], b, geom.c_out);
        be.grad_variance(
            partials,
            first_slots[c],
            &g.gw[c],
            &g.gb[c],
            &layer.w,
            &layer.bias,
            b,
            geom.weights(),
            geom.c_out,
            PerExample::Whole,
        );
        if c > 0 {
            be.conv_backward_input(&mut below[c - 1], dout, &params[c].w, b, geom);
        }
    }
}
