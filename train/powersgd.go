package train

import (
	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/optim"
)

// PowerSGDTensors lists the tensors of a model's flat gradient that codec
// powersgd may compress, each as the [rows, cols] matrix PyTorch's
// powerSGD_hook views it as (the first dimension × the rest); the reducer
// sums whatever it does not list uncompressed, and still applies the hook's
// min_compression_rate to what it does.
//
// The embedding and the head (the emb_unemb parameter group) are left out
// unless embeddings is true. Their gradients are rows per token, a few
// hundred directions no rank-4 approximation holds: compressed like the
// other matrices, they alone cost the demo model at its full batch 3.8–5.4%
// of ELBO against codec none at rank 4, and sent uncompressed they cost it
// nothing measurable (train.TestCodecsConverge has the figures). They are a
// small share of a model's gradient (2·vocab·d elements, 8% of the demo
// model's, 1% of L8-d512's), so PowerSGD's bytes grow by little.
func PowerSGDTensors(ts []model.Tensor, embeddings bool) []allreduce.Tensor {
	var out []allreduce.Tensor
	for _, t := range ts {
		if !embeddings && optim.GroupOf(t.Name, len(t.Shape)) == optim.EmbUnemb {
			continue
		}
		out = append(out, allreduce.Tensor{Off: t.Offset, Rows: t.Shape[0], Cols: t.Size / t.Shape[0]})
	}
	return out
}
