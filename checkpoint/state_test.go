package checkpoint

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeStateRejects(t *testing.T) {
	good, err := encodeState(testState(1, 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeState(good); err != nil {
		t.Fatalf("the valid baseline fails: %v", err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"not json", []byte("{"), "invalid JSON"},
		{"trailing", append(append([]byte{}, good...), "{}"...), "trailing data"},
		{"unknown field", edit(func(m map[string]any) { m["surprise"] = 1 }), "unknown field"},
		{"format", edit(func(m map[string]any) { m["format"] = 2 }), "format 2"},
		{"no run", edit(func(m map[string]any) { delete(m, "run") }), "run identity"},
		{"negative step", edit(func(m map[string]any) { m["step"] = -3 }), "step -3"},
		{"negative cursor", edit(func(m map[string]any) { m["cursor"] = -1 }), "cursor -1"},
		{"fractional step", edit(func(m map[string]any) { m["step"] = 1.5 }), "invalid JSON"},
		{"config hash", edit(func(m map[string]any) { m["config_hash"] = "0000" }), "config_hash"},
		{"changed config", edit(func(m map[string]any) { m["config"].(map[string]any)["lr"] = 1 }), "config_hash"},
		{"config not an object", edit(func(m map[string]any) { m["config"] = []int{1} }), "config is not a JSON object"},
		{"no model hash", edit(func(m map[string]any) { m["model_hash"] = "" }), "model hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeState(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDecodeManifestRejects(t *testing.T) {
	entry := func(name string) string {
		return `{"name":"` + name + `","size":1,"sha256":"` + strings.Repeat("ab", 32) + `"}`
	}
	all := entry(StateFile) + "," + entry(ModelFile) + "," + entry(OptimFile) + "," + entry(ResidualsFile)
	man := func(files string) []byte {
		return []byte(`{"format":1,"run":"r","step":3,"files":[` + files + `]}`)
	}
	if _, err := decodeManifest(man(all)); err != nil {
		t.Fatalf("the valid baseline fails: %v", err)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"unknown file", man(all + "," + entry("../../etc/passwd")), `unknown file "../../etc/passwd"`},
		{"twice", man(all + "," + entry(ModelFile)), "twice"},
		{"missing", man(entry(StateFile)), "does not list " + ModelFile},
		{"bad sha", man(strings.Replace(all, strings.Repeat("ab", 32), "xyz", 1)), "64 hex digits"},
		{"negative size", man(strings.Replace(all, `"size":1`, `"size":-1`, 1)), "negative size"},
		{"format", []byte(`{"format":0,"run":"r","step":3,"files":[]}`), "format 0"},
		{"negative step", []byte(`{"format":1,"run":"r","step":-3,"files":[]}`), "step -3"},
		{"no run", []byte(`{"format":1,"step":3,"files":[]}`), "run identity"},
		{"unknown field", []byte(`{"format":1,"run":"r","step":3,"files":[],"x":1}`), "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeManifest(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
