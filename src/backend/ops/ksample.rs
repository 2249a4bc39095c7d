//! The K-sample estimators (docs/estimators.md): ARMS's antithetic draws and the K-sample
//! score-function gradient.

use crate::backend::consts::{DOUBLE_CV_LEARNED, KSCORE_ARMS, KSCORE_DOUBLE_CV, KSCORE_LOO, KSCORE_RODEO, RODEO_LEARNED};
use crate::backend::MemoryOps;
use crate::rng::RngKey;

/// How [`Backend::k_score_unit_grad`] combines a layer's K chains (docs/estimators.md); each
/// mode is its `KSCORE_*` of kernels/ksample.cu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KScoreMode {
    /// REINFORCE with the leave-one-out baseline: ent + (1/(K-1)) Σ_k (F_k - F̄) z_k.
    Loo = KSCORE_LOO as isize,
    /// ARMS: the leave-one-out term times p(1-p)/(p - J(p)), J the pairwise joint of two draws.
    Arms = KSCORE_ARMS as isize,
    /// Double control variates: plus α·[(1/(K-1)) Σ_k (c_k - c̄) z_k - (Σ_k ∇F_k / K)·p(1-p)],
    /// c_k = ḡ_{-k}·(z_k - p).
    DoubleCv = KSCORE_DOUBLE_CV as isize,
    /// RODEO: plus α·B + β·C, the Gibbs-Stein control variates of the baseline and of the
    /// gradient, built from a learned control network (kernels/ksample.cu).
    Rodeo = KSCORE_RODEO as isize,
}

impl KScoreMode {
    /// The values each encoder layer learns for the mode's control variates (Double CV: α;
    /// RODEO: α, β and its control network's weights, kernels/ksample.cu's layout); 0 for the
    /// modes without.
    pub fn learned(self) -> usize {
        match self {
            KScoreMode::Loo | KScoreMode::Arms => 0,
            KScoreMode::DoubleCv => DOUBLE_CV_LEARNED as usize,
            KScoreMode::Rodeo => RODEO_LEARNED as usize,
        }
    }
}

/// The inputs of [`Backend::k_score_unit_grad`] for one encoder layer of width n.
pub struct KScoreInputs<'a, Buf> {
    pub mode: KScoreMode,
    /// Encoder logits of the layer (shared by its chains), (b, n).
    pub logits: &'a Buf,
    /// The K chains' samples of the layer, each (b, n); chain 0 is the main sample.
    pub z: &'a [&'a Buf],
    /// (K, b): row 0 F_l of the main chain (used by RODEO), row j F_l(chain j) - F_l(main).
    pub rows: &'a Buf,
    /// Double CV and RODEO: ∇_{z_l} F_l of each chain, each (b, n); empty otherwise.
    pub grad_f: &'a [&'a Buf],
    /// Double CV and RODEO: the layer's learned values (α; RODEO: α, β and its control network);
    /// absent otherwise.
    pub coef: Option<&'a Buf>,
    /// Double CV and RODEO: the factor that turns Σ_d g_d·∂g_d/∂value into the ascent direction
    /// of a learned value on the variance loss (-2/(n·L): the loss is the mean of g² over units
    /// and layers).
    pub loss_scale: f32,
}

pub trait KSampleOps: MemoryOps {
    /// ARMS's K antithetic samples of a layer (Dimitriev & Zhou 2021): for each element, the
    /// spacings d of K-1 sorted uniforms `key.uniform(i·(K-1) + s)` (a Dirichlet(1,…,1) draw),
    /// U_k = (1 - d_k)^{K-1} (each uniform), and z_k = [U_k < p] for p = clip(σ(logit)) < ½,
    /// else [1 - U_k < p]. zs holds K outputs (b, n); logits (b, n).
    fn arms_sample(&self, zs: &mut [&mut Self::Buf], logits: &Self::Buf, key: RngKey, clock: Option<&Self::Array<u32>>, b: usize, n: usize);

    /// The logit gradient of a K-sample score-function estimator (see [`KScoreMode`]), out (b, n),
    /// and for the estimators that learn their control variates the per-row ascent directions of
    /// the learned values, `cv_partials` (b, values): loss_scale · Σ_d g_d · ∂g_d/∂value.
    fn k_score_unit_grad(
        &self,
        out: &mut Self::Buf,
        cv_partials: Option<&mut Self::Buf>,
        inp: &KScoreInputs<'_, Self::Buf>,
        b: usize,
        n: usize,
    );
}
