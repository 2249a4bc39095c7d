#!/usr/bin/env python3
"""Mutation audit: plants small, plausible bugs one at a time in a copy of the tree, runs the
test suite on each, and reports which tests fail. A mutant that no test catches is a hole in the
suite. Nothing is changed in the checkout itself, and no mutant is ever committed.

    python3 dev/mutation_audit.py [--work DIR] [--only NAME,...] [--quick] [-- cargo test arguments]

Run it where the tests can run in full (`bash .ci/run` has installed NVRTC into .cache/; the
script puts it on LD_LIBRARY_PATH and sets CI=true so that nothing skips). The copy is built once
(a few minutes), then each mutant costs an incremental build and one test run. Each mutant is a
literal text replacement found by searching src/ and kernels/, so the list survives files being
moved; a mutant whose text is no longer found is reported as stale, not silently skipped.

A mutant may name the test binaries expected to catch it (its fourth field). With --quick, each
mutant first runs only those; if they catch it, that verdict stands (a test that fails on a
subset fails on the whole suite), and only a mutant they miss runs the whole suite. The verdict
is then the same as without --quick, in a fraction of the time.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# (name, what it models, [(old text, new text), ...], [test binaries expected to catch it]):
# every pair must match somewhere; the last field is optional (see --quick).
MUTANTS = [
    ("hnca-baseline-target", "the HNCA baseline's target without log p(z_l | z_{l+1})",
     [("        c[terms.dec_log_prob(block, l + 1)] += 1.0;\n        if all_child {", "        if all_child {")], ["train_step"]),
    ("adam-step-off-by-one", "Adam's step t one ahead of the clock, on both backends",
     [("    let t = (clock::step(clock_words) + 1) as u32;", "    let t = (clock::step(clock_words) + 2) as u32;"),
      ("    u32 t = (u32)(clock_step(p.clock) + 1);", "    u32 t = (u32)(clock_step(p.clock) + 2);")], ["train_step"]),
    ("adam-bias-correction-cpu", "Adam's first-moment bias correction wrong on the CPU only (c1 = 0: parameters become ±inf)",
     [("    let (c1, c2) = (1.0 - powi_f32(hp.beta1, t), 1.0 - powi_f32(hp.beta2, t));", "    let (c1, c2) = (1.0 - powi_f32(hp.beta1, 0), 1.0 - powi_f32(hp.beta2, t));")], ["train_step"]),
    ("block-sum-race", "block_sum's first barrier removed (a shared-memory race)",
     [("    scratch[t] = v;\n    __syncthreads();\n", "    scratch[t] = v;\n")], ["kernels"]),
    ("credit-chunk-boundary", "the kernel credit pass reads each chunk's tables from the row's start",
     [("            for (int j = l; j < len; j += CREDIT_LANES) {\n                int c = c0 + j;", "            for (int j = l; j < len; j += CREDIT_LANES) {\n                int c = j;")], ["kernels"]),
    ("credit-tree-race", "the kernel's lane tree without its barrier between levels",
     [("                lane_ez[t] += lane_ez[t + h];\n            }\n        }\n        __syncthreads();", "                lane_ez[t] += lane_ez[t + h];\n            }\n        }")], ["kernels"]),
    ("credit-renorm-too-rare", "the products renormalised ten times too rarely (they overflow for large weights), on both backends",
     [("        (RENORM_RANGE / max).floor()", "        (10.0 * RENORM_RANGE / max).floor()"),
      ("    return floorf(range / max);", "    return floorf(10.0f * range / max);")], ["cpu_backend"]),
    ("disarm-half", "DisARM's estimate doubled (the ½ lost), on both backends",
     [("*o = own_entropy(a, p) + c * ((z - zt) * p.max(1.0 - p));", "*o = own_entropy(a, p) + c * (2.0 * (z - zt) * p.max(1.0 - p));"),
      ("score = (a.z[i] - a.alt[i]) * fmaxf(p, 1.0f - p);", "score = 2.0f * (a.z[i] - a.alt[i]) * fmaxf(p, 1.0f - p);")], ["exact"]),
    ("delta-sign", "the sign of δ = log P_0 - log P_1 flipped, on both backends",
     [("hindsight_ratios(pk, if on { change } else { -change })", "hindsight_ratios(pk, if on { -change } else { change })"),
      ("hindsight_ratios(pk, on ? change : -change, &rho1, &rho0);", "hindsight_ratios(pk, on ? -change : change, &rho1, &rho0);")], ["exact"]),
    ("skipped-child", "the credit pass leaves out the last child (its factor made 1), on both backends",
     [("            obs[j] = po;\n            oth[j] = pt;\n            ymask[j]", "            obs[j] = if j + 1 == c { 1.0 } else { po };\n            oth[j] = if j + 1 == c { 0.0 } else { pt };\n            ymask[j]"),
      ("            obs[j] = po;\n            oth[j] = pt;\n            ys[j]", "            obs[j] = c == p.c - 1 ? 1.0f : po;\n            oth[j] = c == p.c - 1 ? 0.0f : pt;\n            ys[j]")], ["exact"]),
    ("baseline-rate", "the running baselines move toward half their targets, on both backends",
     [("        *baseline = plan.decay * *baseline + (1.0 - plan.decay) * target as f32;", "        *baseline = plan.decay * *baseline + (1.0 - plan.decay) * 0.5 * target as f32;"),
      ("        b = p.decay * b + (1.0f - p.decay) * (float)target;", "        b = p.decay * b + (1.0f - p.decay) * 0.5f * (float)target;")], ["train_step"]),
    ("reinforce-reward-entropy", "REINFORCE's F_l without the entropy of the layer just above",
     [("        if m > l {\n            c[terms.enc_entropy(block, m)] += scale;", "        if m > l + 1 {\n            c[terms.enc_entropy(block, m)] += scale;")], ["exact"]),
    ("full-reward-upstream", "full_reward without the decoder term just below the layer",
     [("        for m in 1..l {\n            c[terms.dec_log_prob(block, m)] += 1.0;", "        for m in 1..l.saturating_sub(1) {\n            c[terms.dec_log_prob(block, m)] += 1.0;")], ["exact"]),
    ("loo-k-normalisation", "the K-sample leave-one-out coefficients divided by K instead of K - 1, on both backends",
     [("        s.c[j] = (d_of(j) - d_bar) / km1;", "        s.c[j] = (d_of(j) - d_bar) / kf;"),
      ("c_tab[j] = ((j == 0 ? 0.0f : p.rows[(long long)j * p.b + r]) - d_bar) / km1;", "c_tab[j] = ((j == 0 ? 0.0f : p.rows[(long long)j * p.b + r]) - d_bar) / kf;")], ["exact_new_estimators"]),
    ("arms-debias-dropped", "ARMS without its debiasing factor for K > 2, on both backends",
     [("    p * (1.0 - p) / (p - j)\n", "    1.0\n"),
      ("    return p * (1.0f - p) / (p - j);", "    return 1.0f;")], ["exact_new_estimators"]),
    ("double-cv-correction", "Double CV without the global correction of its control variate, on both backends",
     [("let part_b = cv_sum[d] / km1 - gt[d] / kf * (pd * (1.0 - pd));", "let part_b = cv_sum[d] / km1;"),
      ("part_b = acc / km1 - grad_f_total(p.grad_f, k, at + d) / kf * (pd * (1.0f - pd));", "part_b = acc / km1;")], ["exact_new_estimators"]),
    ("hnca-k-own-target", "HNCA with K samples subtracting each chain's own target in its baseline",
     [("                for j in (0..k).filter(|&j| j != row) {", "                for j in 0..k {")], ["exact_new_estimators"]),
    ("grad-var-bessel", "the gradient-variance metric's bias term divided by b - 1, on both backends",
     [("        let (w, bv) = (rw / b as f64 - sw, rb / b as f64 - sb);", "        let (w, bv) = (rw / b as f64 - sw, rb / (b as f64 - 1.0) - sb);"),
      ("        double w = rw / (double)p.b - sw, bv = rb / (double)p.b - sb;", "        double w = rw / (double)p.b - sw, bv = rb / ((double)p.b - 1.0) - sb;")], ["train_step"]),
    ("batch-twin-run-zero", "every run of a batched launch reads run 0's parameters",
     [("name##_body(runs[blockIdx.z]);", "name##_body(runs[0]);")], ["batch"]),
    ("batch-shared-seed", "a batch draws every run's samples with the seed it is given (run 0's), not the run's own",
     [("        RngKey { seed: self.seeds[r], ..key }", "        RngKey { seed: self.seeds[0], ..key }")], ["batch"]),
    ("batch-steps-early", "the batch steps as soon as any run asks, not when every run in it has",
     [("        let all = self.in_batch.iter().zip(&self.waiting).all(|(&i, &w)| !i || w);", "        let all = self.in_batch.iter().zip(&self.waiting).any(|(&i, &w)| i && w);")], ["batch"]),
    # --- host-side logic: the epoch order and the hold-out split ---
    ("sweep-ignores-hold-out", "a sweep accepts --train-images but trains its runs on every image",
     [("    base.prepare_data(&mut data)?;\n", "")], ["hold_out"]),
    ("shuffle-sattolo", "the shuffle draws j below i, not up to i (Sattolo's algorithm: only cyclic permutations)",
     [("        let j = key.below(i as u32, i as u32 + 1) as usize;", "        let j = key.below(i as u32, i as u32) as usize;")], ["epoch_order"]),
    ("shuffle-skips-index-1", "the Fisher-Yates loop stops at 2, so index 1 is never swapped",
     [("    for i in (1..n).rev() {\n        let j = key.below(", "    for i in (2..n).rev() {\n        let j = key.below(")], ["epoch_order"]),
    ("shuffle-same-every-epoch", "the driver keys every epoch's shuffle with epoch 1: the same order every epoch",
     [("shuffle(data.train.n, RngKey::new(opts.seed, e, stream::SHUFFLE))", "shuffle(data.train.n, RngKey::new(opts.seed, 1, stream::SHUFFLE))")], ["epoch_order"]),
    ("resume-skips-every-epoch", "a resumed run skips the batches done before it stopped in every later epoch too",
     [("        std::mem::take(&mut self.skip) as u64", "        self.skip as u64")], ["epoch_order"]),
    ("hold-out-keeps-last-n", "--train-images trains on the last N images and validates on the first ones",
     [("        self.valid = Some(self.train.slice(n..total));\n        self.train = self.train.slice(0..n);",
       "        self.valid = Some(self.train.slice(0..total - n));\n        self.train = self.train.slice(total - n..total);")], ["hold_out"]),
    ("hold-out-overlaps", "the validation set starts one image early: the last training image validates too",
     [("        self.valid = Some(self.train.slice(n..total));", "        self.valid = Some(self.train.slice(n - 1..total));")], ["hold_out"]),
    ("hold-out-keeps-all", "--train-images equal to the training set's size is accepted, leaving an empty validation set",
     [("        if n == 0 || n >= total {", "        if n == 0 || n > total {")], ["hold_out"]),
    ("valid-binarized-as-test", "the validation images binarized with the test set's key",
     [("RngKey::new(opts.seed, e, stream::BINARIZE_VALID), e | 1 << 32)", "RngKey::new(opts.seed, e, stream::BINARIZE_TEST), e | 1 << 32)")], ["hold_out"]),
    # --- host-side logic: hnca report's aggregation and the per-layer metrics ---
    ("report-every-line-of-an-epoch", "the report averages every metrics line, a mid-epoch resume's part-epoch line with the whole epoch's",
     [("        if lines.get(i + 1).is_none_or(|next| epoch(next) != epoch(l)) {", "        if lines.get(i + 1).is_none_or(|_| true) {")], ["report"]),
    ("report-grad-var-unweighted", "the report's gradient variance the plain mean of a run's epoch lines, not weighted by their steps",
     [("            weighted += num(l, \"grad_var\").unwrap_or(0.0) * n;\n            steps_in += n;", "            weighted += num(l, \"grad_var\").unwrap_or(0.0);\n            steps_in += 1.0;")], ["report"]),
    ("report-seconds-first-line", "the report takes a run's training seconds from its first epoch line only (steps/s and wall time)",
     [("        seconds += num(l, \"seconds\").unwrap_or(0.0);", "        if seconds == 0.0 {\n            seconds = num(l, \"seconds\").unwrap_or(0.0);\n        }")], ["report"]),
    ("report-wall-without-eval", "the report's wall time without the final evaluation's seconds",
     [("\"wall_seconds\" => Some(r.train_seconds + eval_seconds),", "\"wall_seconds\" => Some(r.train_seconds),")], ["report"]),
    ("report-unfinished-averaged", "runs without eval.json (unfinished, diverged) enter the report's means",
     [("    let (results, eval_seconds) = r.eval.as_ref()?;", "    let (results, eval_seconds) = r.eval.as_ref().map_or((&[][..], 0.0), |(v, s)| (v.as_slice(), *s));")], ["report"]),
    ("report-std-err-n", "the report's standard error from the standard deviation with divisor n, not n - 1",
     [(".sum::<f64>() / (n - 1.0) / n).sqrt());", ".sum::<f64>() / n / n).sqrt());")], ["report"]),
    ("grad-var-layers-reversed", "grad_var_layers read from the statistics last layer first",
     [("grad_var_layers: (0..layers).map(|l| s[stats::LAYERS + stats::PER_LAYER * l]).collect(),", "grad_var_layers: (0..layers).rev().map(|l| s[stats::LAYERS + stats::PER_LAYER * l]).collect(),")], ["grad_var_layers"]),
    ("grad-var-layers-all-params", "each layer's summed variance divided by the whole network's parameter count, not its own, on both backends",
     [("        layer[0] += (w + bv) / plan.layer_params[l];", "        layer[0] += (w + bv) / all_params;"),
      ("        layer[0] += (w + bv) / p.layer_params[l];", "        layer[0] += (w + bv) / all_params;")], ["grad_var_layers"]),
    ("grad-var-layers-not-averaged", "the metrics line's grad_var_layers the epoch's sums, not divided by its steps",
     [("grad_var_layers: sums.grad_var_layers.iter().map(|v| v / n).collect(),", "grad_var_layers: sums.grad_var_layers.clone(),")], ["grad_var_layers"]),
    ("grad-var-conv-params-last", "the conv bandit's per-layer parameter counts listed dense layers first, convolutions last",
     [("conv.chain((1..self.sizes.len()).map(|l| self.layer_params(l) as f64)).collect()", "(1..self.sizes.len()).map(|l| self.layer_params(l) as f64).chain(conv).collect()")], ["grad_var_layers"]),
    # --- host-side logic: the evaluation loops ---
    ("eval-bound-draws-without-batch", "the bound's encoder draws keyed without the evaluation batch: every batch of 500 images reuses batch 0's samples",
     [("(1 << 48) | ((batch_no as u64) << 24) | sample as u64", "(1 << 48) | sample as u64")], ["evaluation"]),
    ("eval-bound-samples-share-draws", "the bound's K samples keyed without the sample index: each image's K samples are one chain",
     [("(1 << 48) | ((batch_no as u64) << 24) | sample as u64", "(1 << 48) | ((batch_no as u64) << 24)")], ["evaluation"]),
    ("eval-bound-log-k-missing", "the importance-weighted bound's log-mean-exp without its - log K",
     [("mx + s.ln() - (k as f64).ln()", "mx + s.ln()")], ["evaluation"]),
    ("test-elbo-draws-without-batch", "the training run's test ELBO draws keyed without the batch: every batch reuses batch 0's samples",
     [("Draw::at(self.seed, (eval_index << 24) | batch_no as u64, true)", "Draw::at(self.seed, eval_index << 24, true)")], ["evaluation"]),
    ("test-elbo-partial-batch-dropped", "the training run's test ELBO over whole batches only (n / 500 * 500 images), divided by n",
     [("Option<Workspace<B>> = None;\n        let indices: Vec<u32> = (0..split.n as u32).collect();",
       "Option<Workspace<B>> = None;\n        let indices: Vec<u32> = (0..(split.n / EVAL_BATCH * EVAL_BATCH) as u32).collect();")], ["evaluation"]),
    ("bandit-accuracy-full-batches-only", "the bandit's correct actions counted over full batches only, over their images",
     [("correct += be.term_means(&ws.reward, b, 1)[0] * b as f64;", "if b == EVAL_BATCH {\n            correct += be.term_means(&ws.reward, b, 1)[0] * b as f64;\n        }"),
      ("    correct / split.n as f64", "    correct / (split.n / EVAL_BATCH * EVAL_BATCH) as f64")], ["evaluation"]),
    ("bandit-eval-draws-without-batch", "the bandit's evaluation draws keyed without the batch: every batch reuses batch 0's samples",
     [("step: (eval_index << 24) | batch_no as u64, eval: true", "step: eval_index << 24, eval: true")], ["evaluation"]),
    ("bandit-batch-evaluates-run-zero", "in a batch of bandit runs, every run's test accuracy evaluated on run 0's parameters and seed",
     [("evaluate(&self.take(r), split, binarize, index)", "evaluate(&self.take(0), split, binarize, index)")], ["evaluation"]),
    # --- host-side logic: resume identity and batched operations ---
    ("resume-conv-ignores-image-shape", "a conv bandit resume compares the images' size, not their rows and columns: transposed images continue another network",
     [("format!(\"{}x{}\", c.rows, c.cols)", "(c.rows * c.cols).to_string()")], ["resume_identity"]),
    ("resume-vae-ignores-binarize", "a VAE resume does not compare --binarize: a dynamic run continues thresholded",
     [("            (\"--binarize\", value_name(&self.binarize), value_name(&now.binarize)),\n", "")], ["resume_identity"]),
    ("resume-vae-estimator-kind-only", "a VAE resume compares the estimator's kind only, not its K or HNCA's ablation flags",
     [("(\"--estimator\", self.estimator.label(), now.estimator.label()),", "(\"--estimator\", self.estimator.kind.name().to_string(), now.estimator.kind.name().to_string()),")], ["resume_identity"]),
    ("resume-bandit-ignores-conv-layers", "a bandit resume does not compare --conv-layers (the tensors' lengths then refuse it, without naming the field)",
     [("            (\"--conv-layers\", conv(self, &|c| c.layers.to_string()), conv(now, &|c| c.layers.to_string())),\n", "")], ["resume_identity"]),
    ("resume-bandit-ignores-rho-gradient", "a bandit resume does not compare --rho-gradient: the ablation's checkpoint continues as plain HNCA",
     [("            (\"--rho-gradient\", conv(self, &|c| c.rho_gradient.to_string()), conv(now, &|c| c.rho_gradient.to_string())),\n", "")], ["resume_identity"]),
    ("runs-conv-input-grad-run0-weights", "a batch backpropagates through every run's convolution with run 0's weights (reached with 2+ conv layers only)",
     [("self.each(|r| self.inner.conv_backward_input(dx.get(r), &dout[r], &w[r], b, g));", "self.each(|r| self.inner.conv_backward_input(dx.get(r), &dout[r], &w[0], b, g));")], ["batch"]),
    ("runs-axpy-run0-gradient", "a batch's SGD step of the prior adds run 0's gradient to every run (reached with --prior-optimizer sgd only)",
     [("self.each(|r| self.inner.axpy(y.get(r), a, &x[r], n));", "self.each(|r| self.inner.axpy(y.get(r), a, &x[0], n));")], ["batch"]),
    ("vae-batch-forgets-optimizers", "a VAE batch's trainer keeps the default optimisers: its runs' --prior-lr and --prior-optimizer ignored",
     [("        trainer.optimizers = first.optimizers;\n", "")], ["batch"]),
    ("bandit-batch-forgets-rho-gradient", "a bandit batch's trainer leaves --rho-gradient off for its runs",
     [("        trainer.rho_gradient = first.rho_gradient;\n", "")], ["batch"]),
    # --- values: the SGD prior, DisARM's twin, the forward GEMM ---
    ("sgd-prior-descends", "the SGD prior steps down its gradient (a loss's sign convention) instead of ascending the ELBO",
     [("PriorOptimizer::Sgd => be.axpy(p, lr, g, prior_len),", "PriorOptimizer::Sgd => be.axpy(p, -lr, g, prior_len),")], ["written_rules"]),
    ("sgd-prior-main-lr", "the prior's separate optimiser runs at the main --lr, not at --prior-lr",
     [("            let lr = opt.prior_lr as f32;", "            let lr = self.lr;")], ["written_rules"]),
    ("disarm-pair-unclipped-cpu", "the CPU's DisARM pair compares its uniform with the unclipped σ(a)",
     [("let p = clipped_p(a);\n                                *z = (1.0 - u < p) as u8 as f32;", "let p = sigmoid(a);\n                                *z = (1.0 - u < p) as u8 as f32;")], ["written_rules"]),
    ("disarm-twin-fresh-uniform", "the kernel draws DisARM's twin from a uniform of its own, not from 1 - u of the same one",
     [("        p.anti[i] = (u < prob) ? 1.0f : 0.0f;", "        p.anti[i] = (rng_uniform(p.key, (u32)(i + (long long)p.b * p.n)) < prob) ? 1.0f : 0.0f;")], ["written_rules"]),
    ("gemm-forward-accumulates", "the kernel backend's forward GEMM adds to what its output held (β = 1) instead of overwriting it",
     [("            alpha: 1.0,\n            beta: 0.0,\n        });\n    }\n\n    fn matmul_backward_weight", "            alpha: 1.0,\n            beta: 1.0,\n        });\n    }\n\n    fn matmul_backward_weight")], ["written_rules"]),
    ("gemm-forward-bias-rows-off-by-one", "the CPU's forward GEMM writes the bias into all rows but the last, which keeps what it held",
     [("        for row in out.chunks_mut(n) {\n            row.copy_from_slice(bias);", "        for row in out.chunks_mut(n).take(b - 1) {\n            row.copy_from_slice(bias);")], ["written_rules"]),
]

SEARCH_DIRS = ["src", "kernels"]


def sources(root):
    for d in SEARCH_DIRS:
        for p in sorted((root / d).rglob("*")):
            if p.is_file() and p.suffix in (".rs", ".cu", ".cuh", ".h", ".cpp"):
                yield p


def apply(root, pairs):
    """Applies every (old, new) pair wherever `old` occurs; returns the originals to restore."""
    originals = {}
    for old, new in pairs:
        hits = 0
        for p in sources(root):
            text = originals.get(p) or p.read_text()
            current = p.read_text()
            if old in current:
                originals.setdefault(p, text)
                p.write_text(current.replace(old, new))
                hits += current.count(old)
        if hits == 0:
            restore(originals)
            return None, old
    return originals, None


def restore(originals):
    for p, text in originals.items():
        p.write_text(text)


def run_tests(root, env, extra):
    cmd = ["cargo", "test", "--release", "--no-fail-fast"] + extra
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    failed = set(re.findall(r"^test (\S+) \.\.\. FAILED", out, re.M))
    # A test binary killed by a signal (a mutant's wild write) prints no FAILED line of its own.
    for binary, signal in re.findall(r"process didn't exit successfully: `[^`]*/deps/(\w+?)-[0-9a-f]+[^`]*` \(signal: \d+, (\w+)", out):
        failed.add(f"tests/{binary}.rs crashed ({signal})")
    failed = sorted(failed)
    compile_error = "error: could not compile" in out
    passed = sum(int(m) for m in re.findall(r"test result: \w+\. (\d+) passed", out))
    return failed, compile_error, passed, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/hnca-mutation-audit")
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true", help="run each mutant's named test binaries first")
    ap.add_argument("cargo_args", nargs="*")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # A copy of the tracked and untracked-but-not-ignored files; target/ persists between runs.
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    # Only files whose bytes differ are written, with a fresh modification time: copying the
    # checkout's older times over a file that a mutant touched would leave cargo thinking the
    # mutant's build is up to date.
    for f in files:
        src, dst = repo / f, work / f
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.is_file() or dst.read_bytes() != src.read_bytes():
                shutil.copyfile(src, dst)
    # Incremental release builds in the copy: a mutant recompiles only the code it touches
    # (a minute instead of several on two cores). Optimisation settings change no value here:
    # nothing is compiled with fast-math, and the tests compare against references, not bits
    # of another build.
    env = dict(os.environ, CI="true", CARGO_PROFILE_RELEASE_INCREMENTAL="true", CARGO_PROFILE_RELEASE_DEBUG="false")
    nvrtc = repo / ".cache/nvrtc/nvidia/cu13/lib"
    if nvrtc.exists():
        env["LD_LIBRARY_PATH"] = f"{nvrtc}:{env.get('LD_LIBRARY_PATH', '')}"
    selected = [m for m in MUTANTS if not args.only or m[0] in args.only.split(",")]
    if args.only:
        unknown = set(args.only.split(",")) - {m[0] for m in MUTANTS}
        if unknown:
            sys.exit(f"no mutant named {', '.join(sorted(unknown))}")

    def as_args(tests):
        return [a for t in tests for a in ("--test", t)]

    def hinted(mutant):
        return mutant[3] if len(mutant) > 3 else []

    baseline_args = args.cargo_args
    if args.quick and not args.cargo_args:
        # The quick baseline: the hinted binaries must pass unmutated (the whole suite runs only
        # for a mutant they miss, and then its own baseline is CI's).
        baseline_args = as_args(sorted({t for m in selected for t in hinted(m)}))
    failed, compile_error, passed, out = run_tests(work, env, baseline_args)
    if failed or compile_error:
        (work / "baseline.log").write_text(out)
        sys.exit(f"the unmutated tree does not pass ({failed or 'compile error'}); see {work}/baseline.log")
    print(f"unmutated: {passed} tests pass\n")
    print("| mutant | what it plants | tests that fail |")
    print("|---|---|---|")
    missed = 0
    for name, what, pairs, *rest in selected:
        originals, stale = apply(work, pairs)
        if originals is None:
            print(f"| {name} | {what} | STALE: text not found: {stale!r} |")
            missed += 1
            continue
        try:
            failed, compile_error, out = [], False, ""
            tests = rest[0] if rest else []
            if args.quick and not args.cargo_args and tests:
                failed, compile_error, _, out = run_tests(work, env, as_args(tests))
            if not failed and not compile_error:
                failed, compile_error, _, out = run_tests(work, env, args.cargo_args)
        finally:
            restore(originals)
        (work / f"{name}.log").write_text(out)
        if compile_error:
            verdict = "compile error (see log)"
        elif failed:
            verdict = ", ".join(failed)
        else:
            verdict = "**none: not caught**"
            missed += 1
        print(f"| {name} | {what} | {verdict} |", flush=True)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
