package checkpoint

import (
	"bytes"
	"math"
	"os"
	"testing"
)

func FuzzSafetensors(f *testing.F) {
	var b bytes.Buffer
	st := testState(1, 1)
	writeSafetensors(&b, st.Model[1:3], map[string]string{"format": "pt"})
	f.Add(b.Bytes())
	f.Add(rawSafetensors(`{}`, 0))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"__metadata__":{"k":"v"}}`, 0))
	f.Add([]byte{1, 2, 3})
	if other, err := os.ReadFile("testdata/other-writer.safetensors"); err == nil {
		f.Add(other)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, meta, err := readSafetensors(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to a file that decodes the same.
		var out bytes.Buffer
		if err := writeSafetensors(&out, ts, meta); err != nil {
			t.Fatalf("decoded tensors do not encode: %v", err)
		}
		ts2, _, err := readSafetensors(bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatalf("re-encoded file does not decode: %v", err)
		}
		if len(ts2) != len(ts) {
			t.Fatalf("%d tensors after re-encoding, want %d", len(ts2), len(ts))
		}
		for i := range ts {
			if ts[i].Name != ts2[i].Name || len(ts[i].Data) != len(ts2[i].Data) {
				t.Fatalf("tensor %d changed: %q -> %q", i, ts[i].Name, ts2[i].Name)
			}
			for j := range ts[i].Data {
				if math.Float32bits(ts[i].Data[j]) != math.Float32bits(ts2[i].Data[j]) {
					t.Fatalf("%s[%d] changed", ts[i].Name, j)
				}
			}
		}
	})
}

func FuzzStateFile(f *testing.F) {
	good, err := encodeState(testState(2, 3))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":1,"run":"r","model_hash":"h","model_config":{},"config":{},"config_hash":"44136fa355b3678a"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		b, err := encodeState(st)
		if err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
		st2, err := decodeState(b)
		if err != nil {
			t.Fatalf("a re-encoded state does not decode: %v", err)
		}
		equalStates(t, st2, st)
	})
}

func FuzzManifest(f *testing.F) {
	dir := f.TempDir()
	w, err := NewWriter(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	w.Save(testState(2, 3))
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	good, err := readSmall(stepPath(dir, 3) + "/" + ManifestFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":1,"run":"r","step":1,"files":[]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(data)
		if err != nil {
			return
		}
		b, err := encodeManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeManifest(b); err != nil {
			t.Fatalf("a re-encoded manifest does not decode: %v", err)
		}
	})
}
