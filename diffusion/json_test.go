package diffusion

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestConfigJSON(t *testing.T) {
	c := testConfig(-2, 100)
	c.Aggregation = AggMean
	c.CausalPrompt = true
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"loss_aggregation":"mean"`, `"noise_p_independent":0.2`, `"hybrid_mixing_shift":-2`, `"min_log_snr":-9`, `"causal_prompt_attention":true`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("JSON %s lacks %s", data, key)
		}
	}
	var back Config
	if err := json.Unmarshal(data, &back); err != nil || back != c {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"loss_aggregation":"median"}`), &back); err == nil {
		t.Error("unknown aggregation decoded")
	}
	if _, err := json.Marshal(Config{Aggregation: 9}); err == nil {
		t.Error("unknown aggregation encoded")
	}
}

func FuzzAggregationText(f *testing.F) {
	for _, s := range []string{"sum", "mean", "MEAN", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var a Aggregation
		if err := a.UnmarshalText([]byte(s)); err != nil {
			return
		}
		b, err := a.MarshalText()
		if err != nil {
			t.Fatalf("decoded %q to %v, which does not encode: %v", s, a, err)
		}
		var again Aggregation
		if err := again.UnmarshalText(b); err != nil || again != a {
			t.Fatalf("round trip of %q: %v %v", s, again, err)
		}
	})
}
