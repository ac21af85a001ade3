package computetest

import (
	"math"

	"github.com/difftrain/difftrain/compute"
)

// cases lists every operation test, in a fixed order (Parity relies on it).
func cases() []opCase {
	var cs []opCase
	for _, g := range gemmSpecs {
		cs = append(cs, opCase{"Gemm/" + g.name, g.run})
	}
	cs = append(cs,
		opCase{"ScaleAxpySumSquares", caseBLAS1},
		opCase{"Bias", caseBias},
		opCase{"ReluSq", caseReluSq},
		opCase{"RMSNorm", caseRMSNorm},
		opCase{"Rope", caseRope},
		opCase{"Embedding", caseEmbedding},
	)
	for _, a := range attnSpecs {
		cs = append(cs, opCase{"Attention/" + a.name, a.run})
	}
	cs = append(cs,
		opCase{"GIDDLoss", func(e *env) []check { return caseLoss(e, 12, 9, 3, false) }},
		opCase{"GIDDLoss/V300-floor", func(e *env) []check { return caseLoss(e, 6, 300, 0, true) }},
		opCase{"Update/LaProp", func(e *env) []check { return caseUpdate(e, compute.LaProp) }},
		opCase{"Update/AdamW", func(e *env) []check { return caseUpdate(e, compute.AdamW) }},
	)
	return cs
}

type gemmSpec struct {
	name        string
	ta, tb      bool
	m, n, k     int
	pad, batch  int // extra elements per row; batch count
	bcastB      bool
	alpha, beta float32
}

var gemmSpecs = []gemmSpec{
	{name: "NN", m: 5, n: 7, k: 3, alpha: 1},
	{name: "TN", ta: true, m: 6, n: 4, k: 9, alpha: 0.5, beta: 1},
	{name: "NT", tb: true, m: 3, n: 8, k: 5, alpha: -1, beta: 0.25},
	{name: "TT-ld", ta: true, tb: true, m: 4, n: 5, k: 6, pad: 3, alpha: 2, beta: -1},
	{name: "NT-batch-ld", tb: true, m: 5, n: 5, k: 4, pad: 2, batch: 3, alpha: 0.5, beta: 0},
	{name: "TN-batch-broadcastB", ta: true, m: 3, n: 6, k: 4, batch: 4, bcastB: true, alpha: 1, beta: 1},
	{name: "K0", m: 3, n: 4, k: 0, alpha: 1, beta: 0.5},
	{name: "large", m: 67, n: 45, k: 129, alpha: 1, beta: 0},
	// Over a million multiply-adds: big enough for a backend to split them
	// over threads (by rows, by columns, by batch entry).
	{name: "big-TA-ld", ta: true, m: 161, n: 97, k: 81, pad: 3, alpha: 1, beta: 0.5},
	{name: "big-wide-TB-ld", tb: true, m: 47, n: 301, k: 83, pad: 1, alpha: 1, beta: 1},
	{name: "big-batch-TT", ta: true, tb: true, m: 65, n: 63, k: 101, pad: 2, batch: 3, alpha: -0.5},
}

func (s gemmSpec) run(e *env) []check {
	ar, ac := s.m, s.k
	if s.ta {
		ar, ac = s.k, s.m
	}
	br, bc := s.k, s.n
	if s.tb {
		br, bc = s.n, s.k
	}
	g := compute.Gemm{TransA: s.ta, TransB: s.tb, M: s.m, N: s.n, K: s.k, Alpha: s.alpha, Beta: s.beta, Batch: s.batch}
	size := func(rows, cols int, ld *int, stride *int) int {
		l := cols
		if s.pad > 0 {
			l = cols + s.pad
			*ld = l
		}
		if s.batch > 1 {
			*stride = rows*l + 1
		}
		return max(s.batch, 1)**stride + rows*l
	}
	na := size(ar, ac, &g.LDA, &g.StrideA)
	nb := size(br, bc, &g.LDB, &g.StrideB)
	nc := size(s.m, s.n, &g.LDC, &g.StrideC)
	if s.bcastB {
		g.StrideB = 0
	}
	a, b, c := e.rnd(na, 1), e.rnd(nb, 1), e.rnd(nc, 1)
	g.A, g.B, g.C = e.up(a), e.up(b), e.up(c)
	e.be.Gemm(g)
	return []check{{name: "C", got: e.down(g.C), want: refGemm(g, f64(a), f64(b), f64(c))}}
}

func caseBLAS1(e *env) []check {
	x, y := e.rnd(1000, 1), e.rnd(1000, 1)
	xb, yb := e.up(x), e.up(y)
	e.be.Axpy(-1.25, xb, yb)
	wantY := make([]float64, len(y))
	ss := 0.0
	for i := range y {
		wantY[i] = float64(y[i]) - 1.25*float64(x[i])
		ss += float64(x[i]) * float64(x[i])
	}
	gotSS := e.be.SumSquares(xb)
	e.be.Scale(xb, 0.75)
	wantX := make([]float64, len(x))
	for i := range x {
		wantX[i] = 0.75 * float64(x[i])
	}
	return []check{
		{name: "Axpy", got: e.down(yb), want: wantY},
		{name: "SumSquares", got: []float64{gotSS}, want: []float64{ss}},
		{name: "Scale", got: e.down(xb), want: wantX},
	}
}

func caseBias(e *env) []check {
	rows, cols := 5, 7
	x, bias, dx, db := e.rnd(rows*cols, 1), e.rnd(cols, 1), e.rnd(rows*cols, 1), e.rnd(cols, 1)
	xb, bb, dxb, dbb := e.up(x), e.up(bias), e.up(dx), e.up(db)
	e.be.AddBias(xb, bb, rows, cols)
	e.be.BiasBackward(dxb, dbb, rows, cols)
	wantX, wantDB := f64(x), f64(db)
	for r := range rows {
		for c := range cols {
			wantX[r*cols+c] += float64(bias[c])
			wantDB[c] += float64(dx[r*cols+c])
		}
	}
	return []check{{name: "AddBias", got: e.down(xb), want: wantX}, {name: "dbias", got: e.down(dbb), want: wantDB}}
}

func caseReluSq(e *env) []check {
	n := 300
	x, dy := e.rnd(n, 1), e.rnd(n, 1)
	xb, yb, dyb, dxb := e.up(x), e.nan(n), e.up(dy), e.nan(n)
	e.be.ReluSq(xb, yb)
	e.be.ReluSqBackward(xb, dyb, dxb)
	f := func(x []float64) []float64 {
		y := make([]float64, len(x))
		for i, v := range x {
			v = max(v, 0)
			y[i] = v * v
		}
		return y
	}
	return []check{
		{name: "y", got: e.down(yb), want: f(f64(x))},
		{name: "dx", got: e.down(dxb), want: fdGrad(func(x []float64) float64 { return dot(f64(dy), f(x)) }, f64(x)), tol: gradTol},
	}
}

func caseRMSNorm(e *env) []check {
	rows, cols, eps := 4, 16, 1e-6
	x, w, dy, dw := e.rnd(rows*cols, 1.5), e.rnd(cols, 0.3), e.rnd(rows*cols, 1), e.rnd(cols, 1)
	xb, wb, yb, rb := e.up(x), e.up(w), e.nan(rows*cols), e.nan(rows)
	dyb, dxb, dwb := e.up(dy), e.nan(rows*cols), e.up(dw)
	e.be.RMSNorm(xb, wb, yb, rb, rows, cols, float32(eps))
	e.be.RMSNormBackward(xb, wb, rb, dyb, dxb, dwb, rows, cols)
	wantY, wantR := refRMSNorm(f64(x), f64(w), rows, cols, eps)
	x64, w64, dy64 := f64(x), f64(w), f64(dy)
	gx := fdGrad(func(x []float64) float64 { y, _ := refRMSNorm(x, w64, rows, cols, eps); return dot(dy64, y) }, x64)
	gw := fdGrad(func(w []float64) float64 { y, _ := refRMSNorm(x64, w, rows, cols, eps); return dot(dy64, y) }, w64)
	return []check{
		{name: "y", got: e.down(yb), want: wantY},
		{name: "rstd", got: e.down(rb), want: wantR},
		{name: "dx", got: e.down(dxb), want: gx, tol: gradTol},
		{name: "dw", got: e.down(dwb), want: add(f64(dw), gw), tol: gradTol},
	}
}

func caseRope(e *env) []check {
	s := compute.RopeShape{B: 2, N: 5, H: 2, Dh: 8, Theta: 100}
	n := s.B * s.N * s.H * s.Dh
	x, dy := e.rnd(n, 1), e.rnd(n, 1)
	xb, dyb := e.up(x), e.up(dy)
	e.be.Rope(xb, s)
	e.be.RopeBackward(dyb, s)
	gx := fdGrad(func(x []float64) float64 { return dot(f64(dy), refRope(x, s)) }, f64(x))
	return []check{
		{name: "y", got: e.down(xb), want: refRope(f64(x), s)},
		{name: "dx", got: e.down(dyb), want: gx, tol: gradTol},
	}
}

func caseEmbedding(e *env) []check {
	v, dim, rows := 11, 6, 9
	table, dt, dout := e.rnd(v*dim, 1), e.rnd(v*dim, 1), e.rnd(rows*dim, 1)
	ids := e.ids(rows, v)
	ids[3] = ids[1] // a repeated id accumulates twice
	tb, ib, ob, dtb, dob := e.up(table), e.upI(ids), e.nan(rows*dim), e.up(dt), e.up(dout)
	e.be.Embedding(tb, ib, ob, rows, dim)
	e.be.EmbeddingBackward(dtb, ib, dob, rows, dim)
	want, wantDT := make([]float64, rows*dim), f64(dt)
	for t, id := range ids {
		for c := range dim {
			want[t*dim+c] = float64(table[int(id)*dim+c])
			wantDT[int(id)*dim+c] += float64(dout[t*dim+c])
		}
	}
	return []check{{name: "out", got: e.down(ob), want: want}, {name: "dtable", got: e.down(dtb), want: wantDT}}
}

type attnSpec struct {
	name               string
	sink, mask, causal bool
	softCap            float32
}

var attnSpecs = []attnSpec{
	{name: "plain"},
	{name: "sink", sink: true},
	{name: "softcap", softCap: 2},
	{name: "mask", mask: true},
	{name: "mask-causal", mask: true, causal: true},
	{name: "all", sink: true, softCap: 2, mask: true, causal: true},
	{name: "all-block", sink: true, softCap: 2, mask: true},
}

func (s attnSpec) run(e *env) []check {
	a := compute.Attn{B: 2, N: 5, H: 2, Dh: 4, SoftCap: s.softCap, CausalPrompt: s.causal}
	n, hd := a.B*a.N*a.H*a.Dh, a.H*a.Dh
	in := attnIn{a: a, q: f64(e.rnd(n, 1.5)), k: f64(e.rnd(n, 1.5)), v: f64(e.rnd(n, 1))}
	tof := func(v []float64) []float32 {
		out := make([]float32, len(v))
		for i, x := range v {
			out[i] = float32(x)
		}
		return out
	}
	a.Q, a.K, a.V = e.up(tof(in.q)), e.up(tof(in.k)), e.up(tof(in.v))
	var dsk, dsv []float32
	if s.sink {
		in.sk, in.sv = f64(e.rnd(hd, 1)), f64(e.rnd(hd, 1))
		a.SinkK, a.SinkV = e.up(tof(in.sk)), e.up(tof(in.sv))
		dsk, dsv = e.rnd(hd, 1), e.rnd(hd, 1)
		a.DSinkK, a.DSinkV = e.up(dsk), e.up(dsv)
	}
	if s.mask {
		// Sequence 0: a prompt of 2 clean tokens; sequence 1: clean tokens
		// scattered (0, 3, 4) to exercise the causal rule.
		in.noise = []int32{0, 0, 1, 1, 1, 0, 1, 1, 0, 0}
		a.Noise = e.upI(in.noise)
	}
	a.Out = e.nan(n)
	a.Saved = e.nan(compute.AttnSavedLen(a.B, a.N, a.H))
	dout := e.rnd(n, 1)
	a.DOut, a.DQ, a.DK, a.DV = e.up(dout), e.nan(n), e.nan(n), e.nan(n)
	e.be.Attention(a)
	e.be.AttentionBackward(a)

	d64 := f64(dout)
	obj := func() float64 { return dot(d64, refAttention(in)) }
	grad := func(x []float64) []float64 { return fdGrad(func([]float64) float64 { return obj() }, x) }
	cs := []check{
		{name: "out", got: e.down(a.Out), want: refAttention(in)},
		{name: "dq", got: e.down(a.DQ), want: grad(in.q), tol: gradTol},
		{name: "dk", got: e.down(a.DK), want: grad(in.k), tol: gradTol},
		{name: "dv", got: e.down(a.DV), want: grad(in.v), tol: gradTol},
	}
	if s.sink {
		cs = append(cs,
			check{name: "dsinkK", got: e.down(a.DSinkK), want: add(f64(dsk), grad(in.sk)), tol: gradTol},
			check{name: "dsinkV", got: e.down(a.DSinkV), want: add(f64(dsv), grad(in.sv)), tol: gradTol})
	}
	return cs
}

// lossInputs makes T tokens over vocabulary V with mask id m covering masked,
// uniform and hybrid noise, noisy ids equal to the mask, the label and others.
func lossInputs(e *env, T, V, m int) (logits []float32, labels, noisy []int32, params []float32) {
	logits = e.rnd(T*V, 2)
	labels, noisy = make([]int32, T), make([]int32, T)
	params = make([]float32, T*compute.LossParamStride)
	uni := []float32{0, 1, 0.3, 0.8}
	for t := range T {
		x := e.rng.IntN(V - 1)
		if x >= m {
			x++
		}
		if t == 7 {
			x = m // a label equal to the mask id is unusual but well defined
		}
		if t == 2 {
			logits[t*V+m] = 1e4 // suppressed: must not overflow anything
		}
		z := []int{m, x, e.rng.IntN(V)}[t%3]
		labels[t], noisy[t] = int32(x), int32(z)
		p := params[t*compute.LossParamStride:]
		alpha := 0.05 + 0.9*e.rng.Float64()
		p[compute.LPAlpha], p[compute.LPNoiseRate] = float32(alpha), float32(1-alpha)
		p[compute.LPUniform] = uni[(t/3)%len(uni)]
		p[compute.LPWTrain] = float32(0.1 + 2*e.rng.Float64())
		p[compute.LPWElbo] = float32(0.1 + 10*e.rng.Float64())
		p[compute.LPGradScale] = float32(e.rng.Float64())
		if t == 4 {
			p[compute.LPGradScale] = 0 // a clean token
		}
	}
	return logits, labels, noisy, params
}

// caseLoss checks the loss and its gradient. With floor, token 0 gets a label
// logit so low that p(x) falls below safe_log's floor.
func caseLoss(e *env, T, V, m int, floor bool) []check {
	beta := 0.7
	logits, labels, noisy, params := lossInputs(e, T, V, m)
	if floor {
		logits[int(labels[0])] = -150
		params[compute.LPUniform] = 0 // masked: p(x) = α·x̂(x) only
	}
	l := compute.Loss{T: T, V: V, MaskID: m, BetaIS: float32(beta), Logits: e.up(logits),
		Labels: e.upI(labels), Noisy: e.upI(noisy), Params: e.up(params), Out: e.nan(T * compute.LossOutStride)}
	e.be.GIDDLoss(l)
	out := e.down(l.Out)
	l.Grad, l.Out = true, e.nan(T*compute.LossOutStride)
	e.be.GIDDLoss(l)
	outG, grad := e.down(l.Out), e.down(l.Logits)

	want, wantG := make([]float64, T*compute.LossOutStride), make([]float64, T*V)
	for t := range T {
		lg, p := f64(logits[t*V:(t+1)*V]), f64(params[t*compute.LossParamStride:(t+1)*compute.LossParamStride])
		x, z := int(labels[t]), int(noisy[t])
		r := refLoss(lg, x, z, m, p, beta)
		w := want[t*compute.LossOutStride:]
		w[compute.LOLoss], w[compute.LOKL], w[compute.LOIS], w[compute.LOElbo] = r.loss, p[compute.LPWTrain]*r.kl, p[compute.LPWTrain]*r.is, r.elbo
		g := fdGrad(func(lg []float64) float64 { return refLoss(lg, x, z, m, p, beta).loss }, lg)
		for v := range V {
			wantG[t*V+v] = p[compute.LPGradScale] * g[v]
		}
	}
	return []check{
		{name: "out", got: out, want: want},
		{name: "out(grad pass)", got: outG, want: want},
		{name: "dlogits", got: grad, want: wantG, tol: gradTol},
	}
}

func caseUpdate(e *env, kind compute.OptKind) []check {
	n := 37
	h := compute.OptStep{Kind: kind, LR: 0.01, WD: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, Step: 3}
	p, g, m, v := e.rnd(n, 1), e.rnd(n, 1), e.rnd(n, 0.1), e.rnd(n, 0.1)
	for i := range v {
		v[i] = float32(math.Abs(float64(v[i])))
	}
	pb, gb, mb, vb := e.up(p), e.up(g), e.up(m), e.up(v)
	e.be.Update(pb, gb, mb, vb, h)
	wp, wm, wv := refUpdate(f64(p), f64(g), f64(m), f64(v), h)
	return []check{
		{name: "p", got: e.down(pb), want: wp},
		{name: "m", got: e.down(mb), want: wm},
		{name: "v", got: e.down(vb), want: wv},
	}
}
