package node

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
)

func stateHeaderJSON(t testing.TB, cfg train.Config, step int64, params, resid int) []byte {
	t.Helper()
	cj, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(stateHeader{Step: step, Config: cj, Params: params, Residual: resid, SHA256: strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every length in a state header is checked against the model before the
// payload is allocated. Before, any count up to 2^31 was allocated (three
// times) whatever the model.
func TestDecodeHeaderChecksSizesFirst(t *testing.T) {
	cfg := tinyRun(10, 4)
	np := model.NumParams(cfg.Model)
	huge := cfg
	huge.Model.Vocab, huge.Model.Dim, huge.Model.Heads = 1<<30, 1<<14, 2
	other := cfg
	other.LR = 0.3
	for _, tc := range []struct {
		name   string
		raw    []byte
		expect *train.Config
		want   string
	}{
		{"params beyond the model", stateHeaderJSON(t, cfg, 3, 1<<30, 0), nil, "its model has"},
		{"params one short", stateHeaderJSON(t, cfg, 3, np-1, 0), nil, "its model has"},
		{"residual of another size", stateHeaderJSON(t, cfg, 3, np, 5), nil, "residual"},
		{"huge model", stateHeaderJSON(t, huge, 3, 1<<31, 0), nil, "exceeds"},
		{"another run's config", stateHeaderJSON(t, other, 3, np, 0), &cfg, "differs"},
		{"wrong step", stateHeaderJSON(t, cfg, 4, np, 0), nil, "asked for 3"},
	} {
		if _, err := decodeHeader(tc.raw, 3, tc.expect); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one saying %q", tc.name, err, tc.want)
		}
	}
	sn, err := decodeHeader(stateHeaderJSON(t, cfg, 3, np, np), 3, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.state.Params) != np || len(sn.state.M) != np || len(sn.state.V) != np || len(sn.resid) != np {
		t.Fatalf("allocated %d/%d/%d/%d floats, want %d each", len(sn.state.Params), len(sn.state.M), len(sn.state.V), len(sn.resid), np)
	}
}

func FuzzDecodeHeader(f *testing.F) {
	cfg := tinyRun(10, 4)
	np := model.NumParams(cfg.Model)
	f.Add(stateHeaderJSON(f, cfg, 3, np, 0))
	f.Add(stateHeaderJSON(f, cfg, 3, 1<<31, 0))
	f.Add([]byte(`{"step":3,"config":{},"params":5}`))
	// As a node decodes them: it has built its trainer for the run's
	// configuration before it fetches state (without one, a header of a
	// valid model is allocated up to maxStateParams, gigabytes a try).
	f.Fuzz(func(t *testing.T, raw []byte) {
		sn, err := decodeHeader(raw, 3, &cfg)
		if err != nil {
			return
		}
		var c train.Config
		if err := json.Unmarshal(sn.hdr.Config, &c); err != nil || model.NumParams(c.Model) != len(sn.state.Params) {
			t.Fatalf("accepted a header of %d params for config %s", len(sn.state.Params), sn.hdr.Config)
		}
	})
}
