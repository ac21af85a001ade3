package checkpoint

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCompatible(t *testing.T) {
	st := testState(1, 1)
	st.Dir = "/ck/step-00000001"
	base := Current{ModelConfig: st.ModelConfig, ModelHash: st.ModelHash, Config: st.Config, Tokenizer: st.Tokenizer, DatasetID: st.DatasetID}
	tests := []struct {
		name    string
		edit    func(*Current)
		wantErr []string // substrings; none means compatible
		wantLog []string
	}{
		{"same", func(*Current) {}, nil, nil},
		{"lr and steps changed", func(c *Current) {
			c.Config = json.RawMessage(`{"model":{"num_layers":1},"lr":0.001,"steps":2000,"hybrid_mixing_shift":0,"hybrid_mixing_scale":1.0,"seed":18446744073709551615}`)
		}, nil, []string{"field=lr", "was=0.0003", "now=0.001", "field=steps"}},
		{"number spelling only", func(c *Current) {
			c.Config = json.RawMessage(`{"seed":18446744073709551615,"model":{"num_layers":1.0},"lr":3e-4,"steps":1000,"hybrid_mixing_shift":0,"hybrid_mixing_scale":1}`)
		}, nil, nil},
		{"dataset changed", func(c *Current) { c.DatasetID = "other" }, nil, []string{"dataset changed", "now=other"}},
		{"layers changed", func(c *Current) {
			c.ModelConfig = testModelConfig(12)
			c.ModelHash = "ffff"
		}, []string{"different architecture", "num_layers: 1 → 12", "abcdef0123456789", "ffff"}, nil},
		{"field added", func(c *Current) {
			c.ModelConfig = json.RawMessage(strings.Replace(string(testModelConfig(1)), `"zero_head_init":true`, `"zero_head_init":true,"tie":false`, 1))
			c.ModelHash = "eeee"
		}, []string{"tie: absent → false"}, nil},
		{"hash only", func(c *Current) { c.ModelHash = "1234" }, []string{"architecture code changed"}, nil},
		{"tokenizer", func(c *Current) { c.Tokenizer = "bpe" }, []string{`tokenizer "bytes-v1"`, `"bpe"`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := base
			tt.edit(&cur)
			log, logs := newLog()
			err := st.Compatible(cur, log)
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if len(tt.wantErr) > 0 && err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log does not mention %q:\n%s", w, logs)
				}
			}
			if len(tt.wantLog) == 0 && len(tt.wantErr) == 0 && logs.String() != "" {
				t.Errorf("unexpected log:\n%s", logs)
			}
		})
	}
}
