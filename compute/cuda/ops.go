package cuda

import (
	"math"
	"slices"
	"unsafe"

	"github.com/difftrain/difftrain/compute"
)

// Scale sets x *= alpha.
func (b *Backend) Scale(x compute.Buffer, alpha float32) {
	p := b.f32("Scale", "x", x, -1)
	if p == nil {
		return
	}
	b.launch1D("Scale", kScale, p.n, pArg(p), lArg(p.n), fArg(alpha))
}

// Axpy sets y += alpha*x.
func (b *Backend) Axpy(alpha float32, x, y compute.Buffer) {
	px := b.f32("Axpy", "x", x, -1)
	if px == nil {
		return
	}
	py := b.f32("Axpy", "y", y, px.n)
	if py == nil {
		return
	}
	b.launch1D("Axpy", kAxpy, px.n, fArg(alpha), pArg(px), pArg(py), lArg(px.n))
}

// sumsqBlocks is the number of partial sums of SumSquares.
const sumsqBlocks = 256

// SumSquares returns Σ x² accumulated in float64, in a fixed order.
func (b *Backend) SumSquares(x compute.Buffer) float64 {
	const op = "SumSquares"
	p := b.f32(op, "x", x, -1)
	if p == nil || p.n == 0 {
		return 0
	}
	tmp := b.scratchBuf(op, "sumsq", (sumsqBlocks+1)*8)
	if tmp == 0 {
		return 0
	}
	blocks := min(sumsqBlocks, cdiv(p.n, 256))
	b.launch(op, kSumsqPart, [3]int{blocks}, [3]int{256}, pArg(p), lArg(p.n), tmp)
	b.launch(op, kSumFinal, [3]int{1}, [3]int{256}, tmp, iArg(blocks), tmp+sumsqBlocks*8)
	var out float64
	b.download(unsafe.Pointer(&out), tmp+sumsqBlocks*8, 8)
	if b.err != nil {
		return 0
	}
	return out
}

func (b *Backend) rowsCols(op string, rows, cols int) bool {
	if b.err != nil {
		return false
	}
	if rows < 0 || cols < 0 {
		b.fail(op, "negative shape %dx%d", rows, cols)
		return false
	}
	return true
}

// AddBias adds bias to every row of x.
func (b *Backend) AddBias(x, bias compute.Buffer, rows, cols int) {
	const op = "AddBias"
	if !b.rowsCols(op, rows, cols) {
		return
	}
	px, pb := b.f32(op, "x", x, rows*cols), b.f32(op, "bias", bias, cols)
	if px == nil || pb == nil {
		return
	}
	b.launch1D(op, kAddBias, rows*cols, pArg(px), pArg(pb), lArg(rows), iArg(cols))
}

// colSumChunk is the number of rows each block of a column sum covers.
const colSumChunk = 256

// colSum runs out[c] += Σ_r a[r,c]·m[r,c]·rs[r] (nil factors are 1).
func (b *Backend) colSum(op string, a, m, rs, out *buffer, rows, cols int) {
	if rows == 0 || cols == 0 {
		return
	}
	chunks := cdiv(rows, colSumChunk)
	part := b.scratchBuf(op, "colsum", chunks*cols*4)
	if part == 0 {
		return
	}
	b.launch(op, kColSumPart, [3]int{cdiv(cols, 32), chunks}, [3]int{32, 8}, pArg(a), pArg(m), pArg(rs), part,
		iArg(rows), iArg(cols), iArg(colSumChunk))
	b.launch(op, kColSumFinal, [3]int{cdiv(cols, 256)}, [3]int{256}, part, pArg(out), iArg(chunks), iArg(cols))
}

// BiasBackward adds the column sums of dx to dbias.
func (b *Backend) BiasBackward(dx, dbias compute.Buffer, rows, cols int) {
	const op = "BiasBackward"
	if !b.rowsCols(op, rows, cols) {
		return
	}
	px, pb := b.f32(op, "dx", dx, rows*cols), b.f32(op, "dbias", dbias, cols)
	if px == nil || pb == nil {
		return
	}
	b.colSum(op, px, nil, nil, pb, rows, cols)
}

// ReluSq sets y = max(x,0)².
func (b *Backend) ReluSq(x, y compute.Buffer) {
	px := b.f32("ReluSq", "x", x, -1)
	if px == nil {
		return
	}
	py := b.f32("ReluSq", "y", y, px.n)
	if py == nil {
		return
	}
	b.launch1D("ReluSq", kReluSq, px.n, pArg(px), pArg(py), lArg(px.n))
}

// ReluSqBackward sets dx = dy·2·max(x,0).
func (b *Backend) ReluSqBackward(x, dy, dx compute.Buffer) {
	const op = "ReluSqBackward"
	px := b.f32(op, "x", x, -1)
	if px == nil {
		return
	}
	pdy, pdx := b.f32(op, "dy", dy, px.n), b.f32(op, "dx", dx, px.n)
	if pdy == nil || pdx == nil {
		return
	}
	b.launch1D(op, kReluSqBack, px.n, pArg(px), pArg(pdy), pArg(pdx), lArg(px.n))
}

// RMSNorm sets y = (1+w)⊙x/sqrt(mean(x²)+eps) row by row, and rstd.
func (b *Backend) RMSNorm(x, w, y, rstd compute.Buffer, rows, cols int, eps float32) {
	const op = "RMSNorm"
	if !b.rowsCols(op, rows, cols) {
		return
	}
	px, pw, py, pr := b.f32(op, "x", x, rows*cols), b.f32(op, "w", w, cols), b.f32(op, "y", y, rows*cols),
		b.f32(op, "rstd", rstd, rows)
	if px == nil || pw == nil || py == nil || pr == nil || rows == 0 || cols == 0 {
		return
	}
	b.launch(op, kRMSNorm, [3]int{rows}, [3]int{rowBlock(cols)}, pArg(px), pArg(pw), pArg(py), pArg(pr),
		iArg(cols), fArg(eps))
}

// RMSNormBackward overwrites dx and accumulates dw.
func (b *Backend) RMSNormBackward(x, w, rstd, dy, dx, dw compute.Buffer, rows, cols int) {
	const op = "RMSNormBackward"
	if !b.rowsCols(op, rows, cols) {
		return
	}
	n := rows * cols
	px, pw, pr := b.f32(op, "x", x, n), b.f32(op, "w", w, cols), b.f32(op, "rstd", rstd, rows)
	pdy, pdx, pdw := b.f32(op, "dy", dy, n), b.f32(op, "dx", dx, n), b.f32(op, "dw", dw, cols)
	if px == nil || pw == nil || pr == nil || pdy == nil || pdx == nil || pdw == nil || rows == 0 || cols == 0 {
		return
	}
	// dw first: dx may alias dy.
	b.colSum(op, pdy, px, pr, pdw, rows, cols)
	b.launch(op, kRMSNormBack, [3]int{rows}, [3]int{rowBlock(cols)}, pArg(px), pArg(pw), pArg(pr),
		pArg(pdy), pArg(pdx), iArg(cols))
}

func (b *Backend) rope(op string, x compute.Buffer, s compute.RopeShape, inverse bool) {
	if b.err != nil {
		return
	}
	if s.B < 0 || s.N < 0 || s.H < 0 || s.Dh < 0 || s.Dh%2 != 0 {
		b.fail(op, "bad shape B=%d N=%d H=%d Dh=%d (Dh must be even)", s.B, s.N, s.H, s.Dh)
		return
	}
	if !(s.Theta > 0) {
		b.fail(op, "theta %v, must be positive", s.Theta)
		return
	}
	p := b.f32(op, "x", x, s.B*s.N*s.H*s.Dh)
	if p == nil || p.n == 0 {
		return
	}
	b.launch1D(op, kRope, p.n/2, pArg(p), iArg(s.B), iArg(s.N), iArg(s.H), iArg(s.Dh), dArg(s.Theta),
		bArg(inverse))
}

// Rope rotates x in place (NeoX rotate-half).
func (b *Backend) Rope(x compute.Buffer, s compute.RopeShape) { b.rope("Rope", x, s, false) }

// RopeBackward applies the inverse rotation in place.
func (b *Backend) RopeBackward(dx compute.Buffer, s compute.RopeShape) {
	b.rope("RopeBackward", dx, s, true)
}

// Embedding gathers rows of table.
func (b *Backend) Embedding(table, ids, out compute.Buffer, rows, dim int) {
	const op = "Embedding"
	if !b.rowsCols(op, rows, dim) {
		return
	}
	pi, po := b.i32(op, "ids", ids, rows), b.f32(op, "out", out, rows*dim)
	pt := b.f32(op, "table", table, -1)
	if pi == nil || po == nil || pt == nil {
		return
	}
	if dim == 0 && pt.n != 0 || dim > 0 && pt.n%dim != 0 {
		b.fail(op, "table has %d elements, not a multiple of dim %d", pt.n, dim)
		return
	}
	vocab := 0
	if dim > 0 {
		vocab = pt.n / dim
	}
	for t, id := range pi.mirror() {
		if id < 0 || int(id) >= vocab {
			b.fail(op, "token %d: id %d out of range [0, %d)", t, id, vocab)
			return
		}
	}
	if rows == 0 || dim == 0 {
		return
	}
	b.launch(op, kEmbedding, [3]int{rows}, [3]int{rowBlock(dim)}, pArg(pt), pArg(pi), pArg(po), iArg(dim))
}

// EmbeddingBackward adds dout rows into dtable rows. Tokens are grouped by id
// on the host (a stable counting sort of the id mirror), then one block per
// distinct id sums its rows in token order: deterministic, no atomics.
func (b *Backend) EmbeddingBackward(dtable, ids, dout compute.Buffer, rows, dim int) {
	const op = "EmbeddingBackward"
	if !b.rowsCols(op, rows, dim) {
		return
	}
	pi, pd := b.i32(op, "ids", ids, rows), b.f32(op, "dout", dout, rows*dim)
	pt := b.f32(op, "dtable", dtable, -1)
	if pi == nil || pd == nil || pt == nil || rows == 0 || dim == 0 {
		return
	}
	if pt.n%dim != 0 {
		b.fail(op, "dtable has %d elements, not a multiple of dim %d", pt.n, dim)
		return
	}
	vocab := pt.n / dim
	idv := pi.mirror()
	order, seg, segid, ok := groupByID(idv, vocab)
	if !ok {
		for t, id := range idv {
			if id < 0 || int(id) >= vocab {
				b.fail(op, "token %d: id %d out of range [0, %d)", t, id, vocab)
				return
			}
		}
	}
	// One upload: order | seg | segid.
	all := make([]int32, 0, len(order)+len(seg)+len(segid))
	all = append(append(append(all, order...), seg...), segid...)
	tmp := b.scratchBuf(op, "embedding", len(all)*4)
	if tmp == 0 {
		return
	}
	b.upload(tmp, unsafe.Pointer(&all[0]), len(all)*4)
	segPtr := tmp + uint64(len(order))*4
	segidPtr := segPtr + uint64(len(seg))*4
	b.launch(op, kEmbeddingBack, [3]int{len(segid)}, [3]int{rowBlock(dim)}, pArg(pt), tmp, segPtr, segidPtr,
		pArg(pd), iArg(dim))
}

// groupByID sorts token indices by id, stably: order lists tokens, seg[k]
// and seg[k+1] bound the tokens of distinct id segid[k]. ok is false when an
// id is outside [0, vocab).
func groupByID(ids []int32, vocab int) (order, seg, segid []int32, ok bool) {
	count := map[int32]int32{}
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			return nil, nil, nil, false
		}
		count[id]++
	}
	segid = make([]int32, 0, len(count))
	for id := range count {
		segid = append(segid, id)
	}
	slices.Sort(segid)
	start := make(map[int32]int32, len(count))
	seg = make([]int32, len(segid)+1)
	var pos int32
	for k, id := range segid {
		seg[k] = pos
		start[id] = pos
		pos += count[id]
	}
	seg[len(segid)] = pos
	order = make([]int32, len(ids))
	for t, id := range ids {
		order[start[id]] = int32(t)
		start[id]++
	}
	return order, seg, segid, true
}

// Update applies one LaProp or AdamW step to p (see compute.OptStep).
func (b *Backend) Update(p, g, m, v compute.Buffer, h compute.OptStep) {
	const op = "Update"
	pp := b.f32(op, "p", p, -1)
	if pp == nil {
		return
	}
	pg, pm, pv := b.f32(op, "g", g, pp.n), b.f32(op, "m", m, pp.n), b.f32(op, "v", v, pp.n)
	if pg == nil || pm == nil || pv == nil {
		return
	}
	if h.Step < 1 {
		b.fail(op, "step %d, must be at least 1", h.Step)
		return
	}
	t := float64(h.Step)
	bc1 := 1 - math.Pow(float64(h.Beta1), t)
	bc2 := 1 - math.Pow(float64(h.Beta2), t)
	switch h.Kind {
	case compute.LaProp:
		b1 := 1 - (1-float64(h.Beta1))/bc1
		b2 := 1 - (1-float64(h.Beta2))/bc2
		b.launch1D(op, kLaProp, pp.n, pArg(pp), pArg(pg), pArg(pm), pArg(pv), lArg(pp.n), fArg(h.LR), fArg(h.WD),
			fArg(float32(b1)), fArg(float32(b2)), fArg(h.Eps))
	case compute.AdamW:
		b.launch1D(op, kAdamW, pp.n, pArg(pp), pArg(pg), pArg(pm), pArg(pv), lArg(pp.n), fArg(h.LR), fArg(h.WD),
			fArg(h.Beta1), fArg(h.Beta2), fArg(float32(bc1)), fArg(float32(bc2)), fArg(h.Eps))
	default:
		b.fail(op, "unknown optimizer kind %d", h.Kind)
	}
}
