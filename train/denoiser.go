package train

import (
	"fmt"

	"github.com/difftrain/difftrain/model"
)

// Denoiser runs a model for the samplers and the likelihood evaluation of
// the diffusion package (it implements diffusion.Denoiser), in chunks of the
// model's micro-batch size.
type Denoiser struct {
	M            *model.Model
	CausalPrompt bool
	out          []float32
}

// Logits returns [batch·seqLen·V] logits for tokens with attention flags noise.
func (d *Denoiser) Logits(tokens, noise []int32, batch, seqLen int) ([]float32, error) {
	c := d.M.Cfg
	if seqLen != c.SeqLen {
		return nil, fmt.Errorf("denoiser: sequences of %d tokens, the model takes %d", seqLen, c.SeqLen)
	}
	if len(tokens) != batch*seqLen || (noise != nil && len(noise) != batch*seqLen) {
		return nil, fmt.Errorf("denoiser: %d tokens, %d flags for %d sequences of %d", len(tokens), len(noise), batch, seqLen)
	}
	for _, tok := range tokens {
		if tok < 0 || int(tok) >= c.Vocab {
			return nil, fmt.Errorf("denoiser: token %d outside the vocabulary [0, %d)", tok, c.Vocab)
		}
	}
	per := seqLen * c.Vocab
	if cap(d.out) < batch*per {
		d.out = make([]float32, batch*per)
	}
	out := d.out[:batch*per]
	for a := 0; a < batch; a += d.M.MaxBatch {
		n := min(d.M.MaxBatch, batch-a)
		var nz []int32
		if noise != nil {
			nz = noise[a*seqLen : (a+n)*seqLen]
		}
		if err := d.M.Forward(tokens[a*seqLen:(a+n)*seqLen], nz, n, d.CausalPrompt); err != nil {
			return nil, err
		}
		d.M.B.DownloadF32(out[a*per:(a+n)*per], d.M.Logits())
	}
	return out, d.M.B.Err()
}
