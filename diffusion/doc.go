// Package diffusion is the GIDD discrete diffusion process of gidd-spec §1–3
// and §7: the log-SNR schedule, the hybrid mixing distribution (masked,
// uniform and everything between), batch preparation for training (noising,
// prompt and infilling conditioning, empty tokens, the per-token loss
// parameters the compute backend's fused loss takes), a float64 reference of
// the per-token loss, and the samplers and likelihood evaluation used after
// training.
//
// Randomness. Every random draw is a pure function of (run seed, global sample
// index, purpose, counter), computed with the counter-based Philox4x32-10
// generator (see rng.go). Nothing depends on call order, on the rank that
// prepares a sample or on the world size, so a sample is noised identically
// wherever and whenever it is processed.
//
// Precision. The reference computations are in float64. Quantities handed to
// the backend (λ, α, a, weights) are rounded to float32 once; λ is rounded
// to float32 before α, a and the weights are derived from it, as the spec's
// float32 weight computation does.
package diffusion
