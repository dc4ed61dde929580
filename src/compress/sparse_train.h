// Activation predictors for the sparse channel-mix (issue #5). RWKV's FFN computes k = relu(Wk x)^2; neuron i is
// active for a token when (Wk x)_i > 0, and most neurons are not. For each layer this file trains two cheap
// predictors of the active set, to be run before the FFN so that only the active rows are read:
//
//  (a) an MLP C -> hidden -> F without biases: z = W2 relu(W1 x), p = sigmoid(z). Trained with class-weighted
//      binary cross-entropy (positive weight n_neg / n_pos of the layer's training split, clamped to [1, 100]) and
//      Adam on shuffled mini-batches; weights are initialised from a seeded xoshiro256** generator (W1 He-uniform,
//      W2 Xavier-uniform). Training is single-threaded per layer (Eigen is kept single-threaded); layers run in
//      parallel, so the result does not depend on n_threads. The weights are stored as IEEE half and every held-out
//      figure is computed with the rounded weights.
//  (b) a 1-bit copy of Wk: per row r, bit(r, c) = W[r][c] > mean_r and W[r][c] ~ lo_r + (hi_r - lo_r) bit(r, c),
//      with hi_r / lo_r the means of the set / clear entries (hi = lo = mean if all bits are equal). The score is
//      divided by e_r = ||W[r] - approximation||_2 (1 if 0) so that one threshold per layer is meaningful across
//      neurons; stored as lo' = lo_r / e_r and step' = (hi_r - lo_r) / e_r:
//          s_r = lo'_r * sum(x) + step'_r * sum_{c: bit(r, c)} x_c.
//      Bits: row-major F x (C/8) bytes, bit (c % 8), LSB first, of byte c / 8 (C % 8 == 0 required).
//  (c) thresholds reaching a target recall R on a held-out split (the last `holdout` fraction of the tokens; the
//      MLP trains on the rest). recall = #(pairs truly active and predicted active) / #(pairs truly active), over
//      all (token, neuron) pairs of the layer's held-out split.
//
// Runtime rule: neuron r is predicted active iff  z_r > mlp_logit_thresh  OR  s_r > bits_thresh  (strict tests).
// The MLP threshold is a threshold on the logit z (p > t  <=>  z > logit(t)), so the runtime needs no sigmoid;
// the probability threshold is sigmoid(mlp_logit_thresh). A threshold of +inf switches that predictor off; -inf
// makes it always fire (chosen only when no held-out score lies below the one that must be kept).
//
// Each single-predictor threshold is the largest one reaching R on the held-out split; it is placed half-way
// between the lowest score that must be kept and the next lower held-out score (the same held-out predictions as
// "just below", with the most margin). The ensemble pair is the one reaching R with the fewest predicted pairs over
// a grid of MLP recall levels (0; 0.5 .. 0.85 by 0.05; 0.9 .. 0.98 by 0.01; 0.99 .. 0.998 by 0.001; R; levels at or
// above R skipped): for each level the 1-bit threshold is the largest one making the OR reach R. Level 0 is the
// 1-bit predictor alone and level R the MLP alone, so the ensemble never predicts more held-out pairs than the better
// single predictor.
//
// A layer without any active pair in its held-out split is not an error: every recall is reported as 1, every
// threshold is +inf (nothing predicted) and every predicted fraction is 0.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace rwkvl::compress {

struct PredictorOptions {
  int hidden = 64;       // MLP hidden width (>= 1)
  int epochs = 10;       // passes over the training split (>= 1)
  int batch = 256;       // tokens per mini-batch (>= 1)
  double lr = 1e-3;      // Adam step size (betas 0.9 / 0.999, eps 1e-8)
  double holdout = 0.2;  // fraction of the tokens (the last ones) held out for the thresholds, in (0, 1)
  double recall = 0.99;  // target recall R in (0, 1]
  uint64_t seed = 1;     // initialisation and shuffling (each layer derives its own stream)
  int n_threads = 1;     // layers trained in parallel (>= 1); the results do not depend on it
  int64_t first_layer = 0;  // the model layer of layers[0] (each layer's seed and messages use its model index)
  // Store the MLP as int8 with one f16 scale per row (half the bytes of f16) instead of f16; the
  // held-out figures and thresholds then come from the int8 weights.
  bool int8 = false;
  // Called with (units done, total units), one unit per layer-epoch plus one per layer for its held-out
  // evaluation: total = layers * (epochs + 1). Called from any thread, never concurrently.
  std::function<void(int64_t done, int64_t total)> progress;
};

struct LayerSamples {  // one layer's calibration data, neurons in final (file) order
  int64_t n = 0, C = 0, F = 0;
  std::vector<float> x;         // n x C predictor inputs (the FFN key input of each token)
  std::vector<uint8_t> active;  // n x F, 1 where (Wk x)_i > 0 (values must be 0 or 1)
  std::vector<float> wk;        // F x C, float32 Wk (for the 1-bit copy)
};

struct LayerPredictor {
  int64_t C = 0, F = 0, hidden = 0;
  std::vector<uint16_t> w1;     // hidden x C, f16 bits
  std::vector<uint16_t> w2;     // F x hidden, f16 bits
  // int8 form (PredictorOptions::int8): row-major values and f16 row scales, W ~ q * scale[row].
  std::vector<int8_t> q1, q2;
  std::vector<uint16_t> s1, s2;
  std::vector<uint8_t> bits;    // F x C/8
  std::vector<float> lo, step;  // F each (normalised as above)
  // Ensemble thresholds: active iff z > mlp_logit_thresh || s > bits_thresh (+inf = that predictor is off).
  float mlp_logit_thresh = 0, bits_thresh = 0;
  // Held-out figures; fractions are of all held-out (token, neuron) pairs.
  double true_active_frac = 0, recall_mlp = 0, frac_mlp = 0, recall_bits = 0, frac_bits = 0, recall_ens = 0,
         frac_ens = 0;
  float mlp_alone_logit_thresh = 0, bits_alone_thresh = 0;  // thresholds each predictor alone would need
  double pos_weight = 0;  // positive-class weight of the loss (from the training split)
  // Mean weighted BCE per (token, neuron) pair: train_loss over the last epoch's mini-batches (each before its
  // update, f32 weights), holdout_loss over the held-out split with the f16 weights.
  double train_loss = 0, holdout_loss = 0;
  double seconds = 0;                  // wall time spent on this layer
  int64_t n_train = 0, n_holdout = 0;  // tokens in each split (n_holdout = round(holdout * n))
};

// Trains one predictor per layer. Throws rwkvl::Error (kInvalidArgument) on bad options or samples, before any
// work: options out of range, mismatched sizes, C % 8 != 0, non-finite x or wk, active values other than 0/1,
// fewer than 32 training or 8 held-out tokens. Also if training diverges (a weight not finite in f16).
std::vector<LayerPredictor> train_predictors(const std::vector<LayerSamples>& layers, const PredictorOptions& opt);

// Building blocks, exposed for tests.
// The 1-bit copy of a row-major F x C matrix (see (b) above); C % 8 == 0.
void build_bits(const float* wk, int64_t F, int64_t C, std::vector<uint8_t>* bits, std::vector<float>* lo,
                std::vector<float>* step);
// z = W2 relu(W1 x) with the f16 weights, F outputs. A reference implementation (it converts the weights on every
// call); its values are bit-identical to those the thresholds were chosen on.
void mlp_logits(const LayerPredictor& p, const float* x, float* z);
// F scores s_r = lo'_r * sum(x) + step'_r * sum_{bit set} x, computed directly (no tables). The sums are accumulated
// in float in a fixed order (sum(x) left to right; the set bits of each byte in bit order, then the byte sums in
// byte order), which the training code reproduces exactly with byte tables.
void bits_score(const LayerPredictor& p, const float* x, float* s);

}  // namespace rwkvl::compress
