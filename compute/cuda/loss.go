package cuda

import "github.com/difftrain/difftrain/compute"

// GIDDLoss is the fused loss of gidd-spec §2 (see compute.Loss), one thread
// block per token; with Grad it overwrites Logits with the scaled gradient.
func (b *Backend) GIDDLoss(l compute.Loss) {
	const op = "GIDDLoss"
	if b.err != nil {
		return
	}
	if l.T < 0 || l.V < 2 {
		b.fail(op, "T = %d, V = %d: need T >= 0 and V >= 2", l.T, l.V)
		return
	}
	if l.MaskID < 0 || l.MaskID >= l.V {
		b.fail(op, "mask id %d outside [0, %d)", l.MaskID, l.V)
		return
	}
	logits := b.f32(op, "Logits", l.Logits, l.T*l.V)
	labels, noisy := b.i32(op, "Labels", l.Labels, l.T), b.i32(op, "Noisy", l.Noisy, l.T)
	params := b.f32(op, "Params", l.Params, l.T*compute.LossParamStride)
	out := b.f32(op, "Out", l.Out, l.T*compute.LossOutStride)
	if logits == nil || labels == nil || noisy == nil || params == nil || out == nil {
		return
	}
	for _, c := range []struct {
		name string
		v    []int32
	}{{"label", labels.mirror()}, {"noisy token", noisy.mirror()}} {
		for t, id := range c.v {
			if id < 0 || int(id) >= l.V {
				b.fail(op, "token %d: %s %d outside [0, %d)", t, c.name, id, l.V)
				return
			}
		}
	}
	if l.T == 0 {
		return
	}
	b.launch(op, kGIDDLoss, [3]int{l.T}, [3]int{256}, pArg(logits), pArg(labels), pArg(noisy), pArg(params),
		pArg(out), iArg(l.V), iArg(l.MaskID), fArg(l.BetaIS), bArg(l.Grad))
}
