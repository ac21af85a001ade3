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
// unless embeddings is true. Their gradients are rows per token, more
// directions than a rank-4 approximation holds: with them compressed, the
// demo model at its full batch ended 3.8–5.4% of ELBO above codec none at
// rank 4 on three seeds; with them uncompressed, between 0.4% below and
// 1.2% above (train.TestCodecsConverge has the figures).
//
// What that costs in bytes depends on the vocabulary: the two tensors are
// 2·vocab·d elements, 8% of the demo model's gradient and 1% of L8-d512's
// with the byte vocabulary of 260, but most of it with a tokenizer's tens of
// thousands of tokens, where PowerSGD then saves little unless embeddings
// is true. UncompressedShare tells which case a model is in.
func PowerSGDTensors(ts []model.Tensor, embeddings bool) []allreduce.Tensor {
	var out []allreduce.Tensor
	for _, t := range ts {
		if !embeddings && isEmbedding(t) {
			continue
		}
		out = append(out, allreduce.Tensor{Off: t.Offset, Rows: t.Shape[0], Cols: t.Size / t.Shape[0]})
	}
	return out
}

// UncompressedShare is the share of a model's gradient elements that
// PowerSGDTensors(ts, false) leaves out: the embedding and the head.
func UncompressedShare(ts []model.Tensor) float64 {
	total, out := 0, 0
	for _, t := range ts {
		total += t.Size
		if isEmbedding(t) {
			out += t.Size
		}
	}
	if total == 0 {
		return 0
	}
	return float64(out) / float64(total)
}

// isEmbedding reports whether t is the embedding or the head.
func isEmbedding(t model.Tensor) bool {
	return optim.GroupOf(t.Name, len(t.Shape)) == optim.EmbUnemb
}
