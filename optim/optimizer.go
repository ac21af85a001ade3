package optim

import (
	"fmt"
	"math"

	"github.com/difftrain/difftrain/compute"
)

// Param is one parameter tensor with its gradient and moments, usually views
// into the flat parameter, gradient and moment buffers. Name decides the
// group (GroupOf); Shape's product must equal each buffer's length.
type Param struct {
	Name       string
	Shape      []int
	P, G, M, V compute.Buffer
}

// Optimizer applies the configured update to a set of parameters.
type Optimizer struct {
	cfg Config
}

// New validates cfg and returns an optimizer.
func New(cfg Config) (*Optimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Optimizer{cfg: cfg}, nil
}

// Config returns the configuration.
func (o *Optimizer) Config() Config { return o.cfg }

// Stats describes one Step.
type Stats struct {
	Schedule float64 // the schedule multiplier at k
	GradNorm float64 // global L2 norm of the gradients before clipping; NaN when clipping is off
	Clipped  bool    // the gradients were scaled down to ClipNorm
}

// Step applies update number k+1 (k previous updates) to every parameter:
// optionally clips the global gradient norm (Backend.SumSquares over every G,
// then Backend.Scale by ClipNorm/norm when the norm exceeds ClipNorm), then
// calls Backend.Update per tensor with its group's compute.OptStep. It
// checks the parameters first and returns an error naming the first bad one;
// it does not Sync, so backend failures surface from the backend's Sync/Err.
func (o *Optimizer) Step(b compute.Backend, params []Param, k int) (Stats, error) {
	if k < 0 {
		return Stats{}, fmt.Errorf("optimizer step: k = %d, must be non-negative", k)
	}
	if err := CheckParams(params); err != nil {
		return Stats{}, err
	}
	st := Stats{Schedule: o.cfg.Schedule.At(k), GradNorm: math.NaN()}
	if o.cfg.ClipNorm > 0 {
		st.GradNorm = GlobalNorm(b, params)
		if st.GradNorm > o.cfg.ClipNorm {
			s := float32(o.cfg.ClipNorm / st.GradNorm)
			for _, p := range params {
				b.Scale(p.G, s)
			}
			st.Clipped = true
		}
	}
	for _, p := range params {
		b.Update(p.P, p.G, p.M, p.V, o.cfg.Hyper(GroupOf(p.Name, len(p.Shape)), k))
	}
	return st, nil
}

// GlobalNorm returns sqrt(Σ over params of Σ g²).
func GlobalNorm(b compute.Backend, params []Param) float64 {
	var ss float64
	for _, p := range params {
		ss += b.SumSquares(p.G)
	}
	return math.Sqrt(ss)
}

// CheckParams reports the first parameter with a missing buffer, a buffer
// that is not F32, or a length that disagrees with its shape.
func CheckParams(params []Param) error {
	for _, p := range params {
		n := 1
		for _, d := range p.Shape {
			if d <= 0 {
				return fmt.Errorf("parameter %s: shape %v has a non-positive dimension", p.Name, p.Shape)
			}
			n *= d
		}
		for _, x := range []struct {
			what string
			buf  compute.Buffer
		}{{"value", p.P}, {"gradient", p.G}, {"first moment", p.M}, {"second moment", p.V}} {
			if x.buf == nil {
				return fmt.Errorf("parameter %s: no %s buffer", p.Name, x.what)
			}
			if x.buf.DType() != compute.F32 {
				return fmt.Errorf("parameter %s: %s buffer is %v, want f32", p.Name, x.what, x.buf.DType())
			}
			if x.buf.Len() != n {
				return fmt.Errorf("parameter %s: %s buffer has %d elements, shape %v needs %d", p.Name, x.what, x.buf.Len(), p.Shape, n)
			}
		}
	}
	return nil
}
