//! The credit operations as kernel launches on a [`Device`] (kernels/credit.cu).

use super::{
    blocks, BanditUnitParams, CreditParams, CreditTablesParams, Device, Guards, HncaUnitParams, KernelBackend, ScoreUnitParams,
    CREDIT_BLOCK, CREDIT_PARENTS, ELEMENTWISE, ELEMENTWISE_BLOCK, REDUCE_BLOCK,
};
use crate::backend::consts::{SCORE_ALT_ANTITHETIC, SCORE_ALT_MEAN, SCORE_ALT_SAMPLE};
use crate::backend::{CreditOps, HncaInputs, ScoreAlt};

impl<D: Device> CreditOps for KernelBackend<D> {
    fn credit_pass(
        &self,
        flip_lp: &mut D::Buf,
        flip_ent: Option<&mut D::Buf>,
        parent: &D::Buf,
        w: &D::Buf,
        tables: &mut D::Buf,
        child_logits: &D::Buf,
        child: &D::Buf,
        b: usize,
        p: usize,
        c: usize,
    ) {
        let d = &self.device;
        {
            let mut keep = Guards::new(d);
            let t = CreditTablesParams { tables: keep.ptr_mut(tables), w: keep.ptr(w), p: p as i32, c: c as i32 };
            self.launch([p as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &t);
        }
        let mut keep = Guards::new(d);
        let entropy = flip_ent.is_some();
        let params = CreditParams {
            flip_lp: keep.ptr_mut(flip_lp),
            flip_ent: flip_ent.map_or(0, |e| keep.ptr_mut(e)),
            parent: keep.ptr(parent),
            tables: keep.ptr(tables),
            child_logits: keep.ptr(child_logits),
            child: keep.ptr(child),
            b: b as i32,
            p: p as i32,
            c: c as i32,
            entropy: entropy as i32,
        };
        self.launch([b as u32, (p as u32).div_ceil(CREDIT_PARENTS), 1], [CREDIT_BLOCK, 1, 1], &params);
    }

    fn hnca_unit_grad(&self, out: &mut D::Buf, inp: &HncaInputs<'_, D::Buf>, b: usize, p: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let above = inp.above.as_ref();
        let params = HncaUnitParams {
            out: keep.ptr_mut(out),
            logits: keep.ptr(inp.logits),
            z: keep.ptr(inp.z),
            flip_dec: keep.ptr(inp.flip_dec),
            gen_logits: keep.ptr(inp.gen_logits),
            flip_lp: above.map_or(0, |a| keep.ptr(a.flip_lp)),
            flip_ent: above.map_or(0, |a| keep.ptr(a.flip_ent)),
            reward: keep.ptr(inp.reward),
            terms: keep.ptr(inp.terms),
            scale: inp.scale,
            b: b as i32,
            p: p as i32,
            t: inp.t as i32,
            col_dec: inp.col_dec as i32,
            col_gen: inp.col_gen as i32,
            col_ent: above.map_or(0, |a| a.col_ent as i32),
            gen_is_prior: inp.gen_is_prior as i32,
            has_above: above.is_some() as i32,
            all_child: inp.all_child as i32,
            accumulate: inp.accumulate as i32,
            reward_offset: inp.reward_offset as i32,
        };
        self.launch(blocks(b * p, ELEMENTWISE_BLOCK), ELEMENTWISE, &params);
    }

    fn score_unit_grad(&self, out: &mut D::Buf, logits: &D::Buf, z: &D::Buf, alt: ScoreAlt<'_, D::Buf>, coef: &D::Buf, b: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let (mode, alt) = match alt {
            ScoreAlt::Mean => (SCORE_ALT_MEAN, 0),
            ScoreAlt::Sample(z2) => (SCORE_ALT_SAMPLE, keep.ptr(z2)),
            ScoreAlt::Antithetic(zt) => (SCORE_ALT_ANTITHETIC, keep.ptr(zt)),
        };
        let p = ScoreUnitParams {
            out: keep.ptr_mut(out),
            logits: keep.ptr(logits),
            z: keep.ptr(z),
            alt,
            coef: keep.ptr(coef),
            b: b as i32,
            n: n as i32,
            mode: mode as i32,
        };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn bandit_unit_grad(
        &self,
        out: &mut D::Buf,
        logits: &D::Buf,
        z: &D::Buf,
        flip: Option<&D::Buf>,
        rho_gradient: bool,
        coef: &D::Buf,
        b: usize,
        n: usize,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = BanditUnitParams {
            out: keep.ptr_mut(out),
            logits: keep.ptr(logits),
            z: keep.ptr(z),
            flip: flip.map_or(0, |f| keep.ptr(f)),
            coef: keep.ptr(coef),
            b: b as i32,
            n: n as i32,
            rho_gradient: rho_gradient as i32,
        };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }
}
