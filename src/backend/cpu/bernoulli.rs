//! The CPU reference of the Bernoulli layers' operations (kernels/bernoulli.cu).

use super::{chunked_sum, clipped_p, clocked, for_each_row, for_each_row_pair, log_prob_of_bit, row_of, Cpu, Simd, CLIP_LOGIT};
use crate::backend::{BernoulliOps, SampleMode};
use crate::math::{bernoulli_entropy_from_logit, sigmoid};
use crate::rng::RngKey;

impl BernoulliOps for Cpu {
    fn bernoulli_sample(
        &self,
        z: &mut Vec<f32>,
        anti: Option<&mut Vec<f32>>,
        logits: &Vec<f32>,
        key: RngKey,
        clock: Option<&Vec<u32>>,
        mode: SampleMode,
        b: usize,
        n: usize,
    ) {
        debug_assert_eq!((z.len(), logits.len()), (b * n, b * n));
        let key = clocked(key, clock);
        // Uniform number i of the layer is element i of the (b, n) array, whichever thread draws it.
        let simd = Simd::selected();
        // The whole row inside the instruction-set wrapper (the Philox blocks included, which
        // interleave and vectorise there).
        let draw = |r: usize, z: &mut [f32], anti: &mut [f32]| {
            simd.run(
                #[inline(always)]
                || {
                    let mut u = [0.0f32; 64];
                    for j0 in (0..n).step_by(u.len()) {
                        let len = u.len().min(n - j0);
                        key.fill_uniform((r * n + j0) as u32, &mut u[..len]);
                        let (a, u) = (&logits[r * n + j0..r * n + j0 + len], &u[..len]);
                        let z = &mut z[j0..j0 + len];
                        if anti.is_empty() {
                            z.iter_mut().zip(a).zip(u).for_each(|((z, &a), &u)| *z = (u < clipped_p(a)) as u8 as f32);
                        } else {
                            let anti = &mut anti[j0..j0 + len];
                            for (((z, t), &a), &u) in z.iter_mut().zip(anti.iter_mut()).zip(a).zip(u) {
                                let p = clipped_p(a);
                                *z = (1.0 - u < p) as u8 as f32;
                                *t = (u < p) as u8 as f32;
                            }
                        }
                    }
                },
            )
        };
        match (mode, anti) {
            (SampleMode::Standard, _) => for_each_row(z, n, 4 * n, |r, z| draw(r, z, &mut [])),
            (SampleMode::Antithetic, Some(anti)) => for_each_row_pair(z, anti, n, 4 * n, draw),
            (SampleMode::Antithetic, None) => panic!("antithetic sampling needs an output for the twin"),
        }
    }

    fn log_prob_rows(
        &self,
        terms: &mut Vec<f32>,
        t: usize,
        col: usize,
        logits: &Vec<f32>,
        broadcast: bool,
        targets: &Vec<f32>,
        base: Option<(&Vec<f32>, &Vec<f32>)>,
        b: usize,
        n: usize,
    ) {
        let simd = Simd::selected();
        for_each_row(&mut terms[..b * t], t, n, |r, out| {
            let (a, x) = (row_of(logits, r, n, broadcast), &targets[r * n..(r + 1) * n]);
            out[col] = simd.run(
                #[inline(always)]
                || match base {
                    None => chunked_sum(n, |js, buf| {
                        for ((o, &a), &x) in buf.iter_mut().zip(&a[js.clone()]).zip(&x[js]) {
                            *o = log_prob_of_bit(a, x);
                        }
                    }),
                    Some((a0, x0)) => {
                        let (a0, x0) = (row_of(a0, r, n, broadcast), &x0[r * n..(r + 1) * n]);
                        chunked_sum(n, |js, buf| {
                            let pairs = a[js.clone()].iter().zip(&x[js.clone()]).zip(a0[js.clone()].iter().zip(&x0[js]));
                            for (o, ((&a, &x), (&a0, &x0))) in buf.iter_mut().zip(pairs) {
                                *o = log_prob_of_bit(a, x) - log_prob_of_bit(a0, x0);
                            }
                        })
                    }
                },
            );
        });
    }

    fn entropy_rows(&self, terms: &mut Vec<f32>, t: usize, col: usize, logits: &Vec<f32>, base: Option<&Vec<f32>>, b: usize, n: usize) {
        let simd = Simd::selected();
        for_each_row(&mut terms[..b * t], t, n, |r, out| {
            let a = &logits[r * n..(r + 1) * n];
            out[col] = simd.run(
                #[inline(always)]
                || match base {
                    None => chunked_sum(n, |js, buf| {
                        for (o, &a) in buf.iter_mut().zip(&a[js]) {
                            *o = bernoulli_entropy_from_logit(a);
                        }
                    }),
                    Some(a0) => {
                        let a0 = &a0[r * n..(r + 1) * n];
                        chunked_sum(n, |js, buf| {
                            for ((o, &a), &a0) in buf.iter_mut().zip(&a[js.clone()]).zip(&a0[js]) {
                                *o = bernoulli_entropy_from_logit(a) - bernoulli_entropy_from_logit(a0);
                            }
                        })
                    }
                },
            );
        });
    }

    fn weighted_row_sum(
        &self,
        out: &mut Vec<f32>,
        terms: &Vec<f32>,
        coef: &[f32],
        baseline: Option<(&Vec<f32>, usize)>,
        b: usize,
        t: usize,
    ) {
        for (j, coef) in coef.chunks(t).enumerate() {
            for r in 0..b {
                let row = &terms[r * t..(r + 1) * t];
                let s = row.iter().zip(coef).fold(0.0f32, |s, (x, c)| s + x * c);
                out[j * b + r] = match baseline {
                    Some((baselines, i)) => s - baselines[i],
                    None => s,
                };
            }
        }
    }

    fn term_means(&self, terms: &Vec<f32>, b: usize, t: usize) -> Vec<f64> {
        let mut m = vec![0.0f64; t];
        for row in terms.chunks(t).take(b) {
            for (mi, &x) in m.iter_mut().zip(row) {
                *mi += x as f64;
            }
        }
        m.iter_mut().for_each(|x| *x /= b as f64);
        m
    }

    fn bernoulli_delta(&self, out: &mut Vec<f32>, logits: &Vec<f32>, broadcast: bool, targets: &Vec<f32>, b: usize, n: usize) {
        let simd = Simd::selected();
        for_each_row(&mut out[..b * n], n, 4 * n, |r, out| {
            let (a, x) = (row_of(logits, r, n, broadcast), &targets[r * n..(r + 1) * n]);
            simd.run(
                #[inline(always)]
                || out.iter_mut().zip(a).zip(x).for_each(|((o, &a), &x)| *o = x - sigmoid(a)),
            );
        });
    }

    fn entropy_grad(&self, out: &mut Vec<f32>, logits: &Vec<f32>, b: usize, n: usize) {
        let simd = Simd::selected();
        for_each_row(&mut out[..b * n], n, 4 * n, |r, out| {
            let a = &logits[r * n..(r + 1) * n];
            simd.run(
                #[inline(always)]
                || out.iter_mut().zip(a).for_each(|(o, &a)| *o = -a * sigmoid(a) * sigmoid(-a)),
            );
        });
    }

    fn clip_logits(&self, out: &mut Vec<f32>, logits: &Vec<f32>, n: usize) {
        for (o, &a) in out[..n].iter_mut().zip(&logits[..n]) {
            *o = a.clamp(-CLIP_LOGIT, CLIP_LOGIT);
        }
    }
}
