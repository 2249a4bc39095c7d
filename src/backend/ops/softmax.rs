//! The bandit's softmax output: its action, its score and the credit pass into it.

use crate::backend::MemoryOps;
use crate::rng::RngKey;

pub trait SoftmaxOps: MemoryOps {
    /// The bandit's action and reward: for each row r, action[r] drawn from softmax(logits[r])
    /// by inverse CDF with uniform r of `key`, and reward[r] = 1 if action[r] == labels[r] else 0.
    /// action, reward and labels are (b) (actions and labels as f32 integers); logits (b, a).
    fn softmax_act(
        &self,
        action: &mut Self::Buf,
        reward: &mut Self::Buf,
        logits: &Self::Buf,
        labels: &Self::Buf,
        key: RngKey,
        clock: Option<&Self::Array<u32>>,
        b: usize,
        a: usize,
    );

    /// REINFORCE for the softmax output: dout (b, a) = (onehot(action[r]) - softmax(logits[r]))·coef[r].
    fn softmax_score(&self, dout: &mut Self::Buf, logits: &Self::Buf, action: &Self::Buf, coef: &Self::Buf, b: usize, a: usize);

    /// The credit pass into a softmax child: flip (b, p) = log π(action | parent i flipped) -
    /// log π(action), where flipping parent i moves the logits (b, a) by (1 - 2·parent[r, i])·w2[i, :]
    /// (w2 is (p, a): twice the weights for centred parents). In product form, as the Bernoulli
    /// children's: d·w2[i, action] - log Σ_j π_j·e^{d·w2[i, j]}, with e^{±w2} tabled once per call
    /// into `tables` ([`credit_tables_len`]`(p, a)` f32s of scratch).
    fn softmax_credit(
        &self,
        flip: &mut Self::Buf,
        parent: &Self::Buf,
        w2: &Self::Buf,
        tables: &mut Self::Buf,
        logits: &Self::Buf,
        action: &Self::Buf,
        b: usize,
        p: usize,
        a: usize,
    );
}
