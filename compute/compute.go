// Package compute defines the tensor backend that the model runs on.
//
// A Backend owns memory (opaque Buffers: host slices on the CPU, device
// pointers on a GPU) and implements every operation the GIDD transformer
// needs, each with its backward. Model code only calls these methods; it never
// reads a Buffer directly. The CPU backend (compute/cpu) is the reference that
// other backends are tested against (compute/computetest).
//
// Conventions, shared by every backend:
//   - Matrices are row-major float32. "rows x cols" means rows of cols floats.
//   - Token ids and flags live in I32 buffers.
//   - Backward operations OVERWRITE gradients of activations (dx) and
//     ACCUMULATE (+=) into gradients of parameters (dw, dbias, dtable, dsink),
//     so gradient accumulation over micro-batches needs no extra pass.
//   - Operations do not return errors. A backend records the first error
//     (bad shape, device failure) and reports it from Err and Sync, the way a
//     CUDA context keeps a sticky error; after an error, operations are no-ops.
//   - Operations may run asynchronously; Download and Sync wait for them.
package compute

import "fmt"

// DType is the element type of a Buffer.
type DType uint8

const (
	F32 DType = iota // float32
	I32              // int32
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case I32:
		return "i32"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Buffer is an opaque handle to backend memory: a whole allocation or a view
// into one. Only the backend that made it may use it.
type Buffer interface {
	Len() int // number of elements
	DType() DType
}

// Gemm describes C = Alpha*op(A)*op(B) + Beta*C on row-major matrices, where
// op(A) is M x K, op(B) is K x N and C is M x N. With TransA, A is stored
// K x M (and op(A) = A^T); with TransB, B is stored N x K. LDA, LDB, LDC are
// the row strides in elements (0 means tightly packed). With Batch > 1 the
// product is repeated Batch times, the i-th using A at element offset
// i*StrideA, B at i*StrideB and C at i*StrideC.
type Gemm struct {
	TransA, TransB bool
	M, N, K        int
	Alpha, Beta    float32
	A              Buffer
	LDA, StrideA   int
	B              Buffer
	LDB, StrideB   int
	C              Buffer
	LDC, StrideC   int
	Batch          int
}

// RopeShape describes rotary embedding over x laid out as [B*N, H*Dh]: token
// t = b*N + n has position n. Rotation is NeoX "rotate half" style over the
// whole head: for i < Dh/2, pair (x[i], x[i+Dh/2]) is rotated by angle
// n * Theta^(-2i/Dh).
type RopeShape struct {
	B, N, H, Dh int
	Theta       float64
}

// Attn describes bidirectional multi-head attention with a learned key/value
// sink, tanh soft-cap and an optional prompt mask (gidd-spec §4.3, §3.3).
//
// Q, K, V, Out are [B*N, H*Dh] (head h of token t at t*H*Dh + h*Dh). SinkK and
// SinkV are [H*Dh] (nil: no sink). For query i and key j of one sequence the
// score is s = (q_i·k_j)/sqrt(Dh), then s = SoftCap*tanh(s/SoftCap) when
// SoftCap > 0. The sink is key index 0 (never masked, not rotated), followed by
// the N tokens. Softmax over the N+1 keys, output = sum_j p_j v_j.
//
// Noise is nil (every query sees every key) or an I32 [B*N] flag, 1 for
// noised tokens and 0 for clean (prompt) tokens. Noisy queries see every key.
// A clean query i sees key j when Noise[j] == 0 (block prompt attention);
// with CausalPrompt it sees instead the keys j <= i (whatever their flag).
//
// Saved is [AttnSavedLen(B,N,H)] scratch written by the forward pass and read
// by the backward pass (probabilities and whatever else a backend keeps).
//
// Backward reads DOut and writes DQ, DK, DV (overwrite); DSinkK and DSinkV
// (when the sink is used) accumulate.
type Attn struct {
	B, N, H, Dh  int
	SoftCap      float32
	CausalPrompt bool
	Q, K, V      Buffer
	SinkK, SinkV Buffer
	Noise        Buffer
	Out          Buffer
	Saved        Buffer

	DOut, DQ, DK, DV Buffer
	DSinkK, DSinkV   Buffer
}

// AttnSavedLen is the length of Attn.Saved: probabilities and soft-cap
// derivatives, each [B, H, N, N+1].
func AttnSavedLen(b, n, h int) int { return 2 * b * h * n * (n + 1) }

// LossParamStride is the number of per-token floats in Loss.Params.
const LossParamStride = 6

// Per-token entries of Loss.Params, each row LossParamStride floats.
const (
	LPAlpha     = iota // α(λ): signal rate, clipped λ
	LPUniform          // a(λ): uniform share of the noise, π_λ = a·u + (1−a)·e_m
	LPWTrain           // training weight w_tr (already clipped)
	LPWElbo            // ELBO weight w_el (already clipped)
	LPGradScale        // d objective / d loss_tok (0 for clean tokens)
	// LPNoiseRate is 1−α(λ) = σ(−λ), computed in float64 before rounding: near
	// λ = 9, 1 − float32(α) loses up to 5e-4 of its value.
	LPNoiseRate
)

// LossOutStride is the number of per-token floats the loss writes to Loss.Out.
const LossOutStride = 4

// Per-token entries of Loss.Out.
const (
	LOLoss = iota // w_tr·KL + BetaIS·w_tr·IS
	LOKL          // w_tr·KL  (kl_loss metric)
	LOIS          // w_tr·IS  (is_loss metric)
	LOElbo        // w_el·(KL + IS)
)

// Loss is the fused GIDD loss of gidd-spec §2 over T tokens and a vocabulary
// of V, mask id MaskID. Per token t with logits ℓ (row t of Logits), clean
// label x, noisy token z and the Params row:
//
//	ℓ_m ← −1e6; x̂ = softmax(ℓ)
//	π(v) = a/(V−1) for v ≠ m, 1−a for v = m
//	q = α·e_x + (1−α)·π;  p = α·x̂ + (1−α)·π, with 1−α read from LPNoiseRate;
//	logs are safe_log (floor at the
//	smallest normal float32, so exact zeros give log = −87.3365)
//	KL = Σ_v q(v)(log q(v) − log p(v))
//	IS = q(z)/(p(z)+1e−12) − (log q(z) − log p(z)) − 1
//
// and writes Out (see LO*). With Grad, Logits is overwritten with
// GradScale·d(loss_tok)/dℓ (zero in the mask column); the gradient is exact
// for the formulas above (safe_log is treated as log where its argument is
// above the floor and as a constant below it).
type Loss struct {
	T, V, MaskID  int
	BetaIS        float32
	Logits        Buffer // F32 [T, V]
	Labels, Noisy Buffer // I32 [T]
	Params        Buffer // F32 [T, LossParamStride]
	Out           Buffer // F32 [T, LossOutStride]
	Grad          bool
}

// OptKind selects the update rule of Backend.Update.
type OptKind uint8

const (
	LaProp OptKind = iota // gidd-spec §6.1
	AdamW
)

// OptStep holds the hyper-parameters of one optimizer update of one tensor.
// Step is the update count t after incrementing (1 for the first update).
//
// LaProp (M and V stored bias-corrected, as in the spec):
//
//	b1 = 1 − (1−β1)/(1−β1^t), b2 = 1 − (1−β2)/(1−β2^t)
//	v ← b2·v + (1−b2)·g²;  ĝ = g/(sqrt(v)+Eps);  m ← b1·m + (1−b1)·ĝ
//	θ ← θ − LR·(m + WD·θ)
//
// AdamW (decoupled decay, standard bias correction):
//
//	m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//	θ ← θ − LR·( (m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + Eps) + WD·θ )
type OptStep struct {
	Kind                 OptKind
	LR, WD, Beta1, Beta2 float32
	Eps                  float32
	Step                 int
}

// Backend is a tensor backend. It is not safe for concurrent use; one
// goroutine (the step loop) drives it.
type Backend interface {
	// Name says which backend and library this is, e.g. "cpu (OpenBLAS 0.3.21, Zen)".
	Name() string
	// Close frees every buffer and library handle.
	Close() error
	// Err returns the first error an operation recorded, if any.
	Err() error
	// Sync waits for queued operations and returns Err().
	Sync() error

	// Memory.
	Alloc(dt DType, n int) Buffer          // zero-filled
	View(b Buffer, off, n int) Buffer      // elements [off, off+n) of b
	Free(b Buffer)                         // b must be a whole allocation
	UploadF32(dst Buffer, src []float32)   // len(src) == dst.Len()
	UploadI32(dst Buffer, src []int32)     // len(src) == dst.Len()
	DownloadF32(dst []float32, src Buffer) // waits; len(dst) == src.Len()
	Zero(b Buffer)
	Copy(dst, src Buffer) // same length and type

	// Dense algebra.
	Gemm(g Gemm)
	Scale(x Buffer, alpha float32)   // x *= alpha
	Axpy(alpha float32, x, y Buffer) // y += alpha*x
	SumSquares(x Buffer) float64     // Σ x², waits

	// Layers. rows x cols activations; bias, w are [cols].
	AddBias(x, bias Buffer, rows, cols int)        // x[r,:] += bias
	BiasBackward(dx, dbias Buffer, rows, cols int) // dbias += Σ_r dx[r,:]
	ReluSq(x, y Buffer)                            // y = max(x,0)²
	ReluSqBackward(x, dy, dx Buffer)               // dx = dy·2·max(x,0)
	// RMSNorm: y = (1+w) ⊙ x / sqrt(mean(x²)+eps); rstd[r] = 1/sqrt(mean(x²)+eps).
	RMSNorm(x, w, y, rstd Buffer, rows, cols int, eps float32)
	// RMSNormBackward: dx = ∂/∂x (overwrite), dw += ∂/∂w.
	RMSNormBackward(x, w, rstd, dy, dx, dw Buffer, rows, cols int)
	Rope(x Buffer, s RopeShape)          // in place
	RopeBackward(dx Buffer, s RopeShape) // in place: the inverse rotation
	// Embedding: out[t,:] = table[ids[t],:]. ids out of range record an error.
	Embedding(table, ids, out Buffer, rows, dim int)
	EmbeddingBackward(dtable, ids, dout Buffer, rows, dim int) // dtable[ids[t],:] += dout[t,:]
	Attention(a Attn)
	AttentionBackward(a Attn)
	GIDDLoss(l Loss)

	// Update applies one optimizer step to a parameter tensor p with gradient
	// g and moments m, v (all the same length).
	Update(p, g, m, v Buffer, h OptStep)
}

// Host is implemented by backends whose buffers live in host memory (the CPU
// backend). Code that moves gradients to the network uses it to skip a copy;
// everything else must go through Upload/Download.
type Host interface {
	F32(b Buffer) []float32
}
