package diffusion

import "sort"

// AdaptivePriorLogSNR is the fixed λ of the adaptive sampler's prior weight:
// the reference hard-codes −9, whatever the schedule (spec §7.3, §11.8).
const AdaptivePriorLogSNR = -9

// AdaptiveScores writes the greedy confidence scores of one sequence
// (spec §7.3) into scores (len N):
//
//	score_j = (max_v probs_j(v) − probs_j(z_j)) · π_{−9}(z_j) · noise_mask_j
//
// probs is [N, Vocab], the mask-suppressed softmax of the logits.
func AdaptiveScores(probs []float64, z, noiseMask []int32, n Noise, scores []float64) {
	V := n.Vocab
	for j := range scores {
		if noiseMask[j] == 0 {
			scores[j] = 0
			continue
		}
		row := probs[j*V : (j+1)*V]
		mx := row[0]
		for _, p := range row[1:] {
			mx = max(mx, p)
		}
		scores[j] = (mx - row[z[j]]) * n.Pi(AdaptivePriorLogSNR, int(z[j]))
	}
}

// TopK returns the indices of the k largest scores the way the reference
// picks them: a stable ascending sort, then the last k, so ties go to the
// highest indices.
func TopK(scores []float64, k int) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	k = min(max(k, 0), len(idx))
	return idx[len(idx)-k:]
}

// Argmax returns the first index of the largest entry.
func Argmax(p []float64) int {
	best := 0
	for v := range p {
		if p[v] > p[best] {
			best = v
		}
	}
	return best
}
