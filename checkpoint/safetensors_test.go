package checkpoint

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ts   []Tensor
		meta map[string]string
	}{
		{"none", nil, nil},
		{"none with metadata", nil, map[string]string{"format": "pt"}},
		{"scalar", []Tensor{{Name: "s", Shape: []int{}, Data: []float32{2.5}}}, nil},
		{"zero-size", []Tensor{{Name: "z", Shape: []int{0, 3}, Data: []float32{}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}, nil},
		{"several", []Tensor{
			{Name: "b.weight", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
			{Name: "a \"quoted\" ü", Shape: []int{3}, Data: []float32{float32(math.Inf(-1)), math.Float32frombits(0x7fc0beef), -0}},
		}, map[string]string{"format": "pt", "step": "7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeSafetensors(&b, tt.ts, tt.meta); err != nil {
				t.Fatal(err)
			}
			n := binary.LittleEndian.Uint64(b.Bytes())
			if (8+n)%8 != 0 || b.Bytes()[8] != '{' {
				t.Fatalf("header length %d is not padded to 8 bytes or does not start with '{'", n)
			}
			ts, meta, err := readSafetensors(bytes.NewReader(b.Bytes()), int64(b.Len()))
			if err != nil {
				t.Fatal(err)
			}
			if len(ts) != len(tt.ts) || len(meta) != len(tt.meta) {
				t.Fatalf("got %d tensors %v, want %d %v", len(ts), meta, len(tt.ts), tt.meta)
			}
			for k, v := range tt.meta {
				if meta[k] != v {
					t.Errorf("metadata %s = %q, want %q", k, meta[k], v)
				}
			}
			for i, w := range tt.ts {
				g := ts[i]
				if g.Name != w.Name || len(g.Shape) != len(w.Shape) || len(g.Data) != len(w.Data) {
					t.Fatalf("tensor %d: %q %v, want %q %v", i, g.Name, g.Shape, w.Name, w.Shape)
				}
				for j := range w.Data {
					if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
						t.Errorf("%s[%d] = %#x, want %#x", w.Name, j, math.Float32bits(g.Data[j]), math.Float32bits(w.Data[j]))
					}
				}
			}
		})
	}
}

// rawSafetensors assembles a file from a header string and data length.
func rawSafetensors(hdr string, data int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	b = append(b, hdr...)
	return append(b, make([]byte, data)...)
}

func TestSafetensorsRejects(t *testing.T) {
	good := rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8)
	if _, _, err := readSafetensors(bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatalf("the valid baseline fails: %v", err)
	}
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "shorter than the 8-byte"},
		{"huge header length", binary.LittleEndian.AppendUint64(nil, 1<<40), "header length"},
		{"header past the end", rawSafetensors(`{}`, 0)[:9], "header length"},
		{"truncated data", good[:len(good)-1], "outside the 7-byte data section"},
		{"extra data", append(append([]byte{}, good...), 0, 0, 0, 0), "cover 8 data bytes but the file holds 12"},
		{"not an object", rawSafetensors(`[1,2]`, 0), "does not start with '{'"},
		{"bad json", rawSafetensors(`{"a":`, 0), "header"},
		{"trailing bytes", rawSafetensors(`{} x`, 0), "unexpected bytes"},
		{"not utf-8", rawSafetensors("{\"\xff\":1}", 0), "UTF-8"},
		{"dtype", rawSafetensors(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 4), `dtype "F16" is not supported`},
		{"missing field", rawSafetensors(`{"a":{"dtype":"F32","shape":[2]}}`, 8), "needs dtype, shape and data_offsets"},
		{"unknown field", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, 8), "unknown field"},
		{"duplicate", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "appears twice"},
		{"shape mismatch", rawSafetensors(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), "needs 12 bytes"},
		{"negative dim", rawSafetensors(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8), "negative dimension"},
		{"fractional dim", rawSafetensors(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}`, 8), "tensor \"a\""},
		{"overflowing shape", rawSafetensors(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}`, 8), "larger than the file"},
		{"offsets out of range", rawSafetensors(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8), "outside"},
		{"three offsets", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, 8), "has 3 values"},
		{"unaligned", rawSafetensors(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8), "multiples of 4"},
		{"hole", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "leave a hole"},
		{"overlap", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "overlap"},
		{"metadata not strings", rawSafetensors(`{"__metadata__":{"a":1}}`, 0), "__metadata__"},
		{"empty name", rawSafetensors(`{"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, 0), "empty name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := readSafetensors(bytes.NewReader(tt.file), int64(len(tt.file)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCheckTensors(t *testing.T) {
	tests := []struct {
		name string
		ts   []Tensor
		want string
	}{
		{"no name", []Tensor{{Shape: []int{1}, Data: []float32{1}}}, "has no name"},
		{"reserved", []Tensor{{Name: metaKey, Shape: []int{1}, Data: []float32{1}}}, "reserved"},
		{"duplicate", []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}, "twice"},
		{"shape", []Tensor{{Name: "a", Shape: []int{2, 2}, Data: []float32{1}}}, "holds 4 values but it has 1"},
		{"negative", []Tensor{{Name: "a", Shape: []int{-1}, Data: nil}}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := writeSafetensors(&bytes.Buffer{}, tt.ts, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// testdata/other-writer.safetensors was written by an independent Go
// implementation of the format (github.com/nlpodyssey/safetensors, which
// follows the reference's layout: sorted names, space padding).
func TestSafetensorsReadsOtherWriter(t *testing.T) {
	b, err := os.ReadFile("testdata/other-writer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	ts, meta, err := readSafetensors(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Tensor{
		{Name: "a.bias", Shape: []int{1}, Data: []float32{-1.5}},
		{Name: "m.empty", Shape: []int{0, 4}, Data: []float32{}},
		{Name: "z.weight", Shape: []int{2, 3}, Data: []float32{0, 1, 2, 3, 4, 5}},
	}
	if meta["format"] != "pt" || len(ts) != len(want) {
		t.Fatalf("got %d tensors, metadata %v", len(ts), meta)
	}
	for i, w := range want {
		if ts[i].Name != w.Name || !slices.Equal(ts[i].Shape, w.Shape) || !slices.Equal(ts[i].Data, w.Data) {
			t.Errorf("tensor %d = %+v, want %+v", i, ts[i], w)
		}
	}
}
