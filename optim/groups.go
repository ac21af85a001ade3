package optim

import (
	"fmt"
	"strings"
)

// Group is an optimizer parameter group of spec §5.3.
type Group uint8

const (
	Bulk     Group = iota // hidden matrices: LR η/d, decay weight_decay·d
	LN                    // RMSNorm weights: LR aux·η, decay ln_wd
	Bias                  // MLP biases and the k/v sink: LR aux·η, decay bias_wd
	EmbUnemb              // embedding and lm_head: LR aux·η, no decay
)

func (g Group) String() string {
	switch g {
	case Bulk:
		return "bulk"
	case LN:
		return "ln"
	case Bias:
		return "bias"
	case EmbUnemb:
		return "emb_unemb"
	}
	return fmt.Sprintf("group(%d)", uint8(g))
}

// GroupOf assigns a parameter to its group by name, in the spec's order: a
// name containing "norm" → LN, "embed_tokens" → EmbUnemb, "bias" → Bias,
// "lm_head" → EmbUnemb, any other tensor with more than one dimension →
// Bulk. The attention sinks (names containing "sink") and any remaining
// one-dimensional tensor are in the Bias group, which the spec lists k_sink
// and v_sink under, whatever their shape.
func GroupOf(name string, ndim int) Group {
	switch {
	case strings.Contains(name, "norm"):
		return LN
	case strings.Contains(name, "embed_tokens"):
		return EmbUnemb
	case strings.Contains(name, "bias"):
		return Bias
	case strings.Contains(name, "lm_head"):
		return EmbUnemb
	case strings.Contains(name, "sink"):
		return Bias
	case ndim > 1:
		return Bulk
	}
	return Bias
}
