// Package checkpoint saves and restores training state: atomically (a reader
// never sees a half-written checkpoint as complete), asynchronously (the step
// loop pays for one memcpy into preallocated buffers, a background writer does
// the rest), verified (a manifest holds every file's size and sha256) and with
// retention of the newest K checkpoints. Weights and optimizer moments are
// safetensors files that PyTorch and Hugging Face users load directly; the
// rest of the state is one JSON file.
//
// A checkpoint is a directory step-NNNNNNNN under the checkpoint directory:
//
//	model.safetensors      weights ("model" tensors)
//	optim.safetensors      optimizer moments ("<param>.m", "<param>.v", ...)
//	residuals.safetensors  allreduce error-feedback residuals (may hold none)
//	state.json             step, seed, data cursor, schedule, configs, identities
//	tokenizer.json         the run's Hugging Face tokenizer file, for a dataset
//	                       with one (its sha256 also in state.json); absent for
//	                       the byte-level tokenizer
//	manifest.json          every file above with its size and sha256
//
// The package knows nothing of the model, optimizer or cluster: callers hand
// it named float32 tensors and JSON configs.
//
// Typical use by the step loop:
//
//	st, err := checkpoint.Resolve(dir, "auto", false, log) // nil: fresh start
//	if st != nil {
//		err = st.Compatible(checkpoint.Current{...}, log)  // architecture must match
//	}
//	w, err := checkpoint.NewWriter(dir, checkpoint.Options{Keep: 3})
//	w.Prepare(&state)   // optional: map the snapshot buffers before the first step
//	...
//	w.Save(&state)      // every K steps: a memcpy, then written in the background
//	...
//	err = w.Close()     // waits for the last save and reports its error
package checkpoint
