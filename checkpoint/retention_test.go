package checkpoint

import (
	"slices"
	"strings"
	"testing"
)

func TestRetention(t *testing.T) {
	tests := []struct {
		name  string
		keep  int
		every int64
		saves []int64
		want  []int64 // remaining, newest first
	}{
		{"default keeps 3", 0, 0, []int64{10, 20, 30, 40, 50}, []int64{50, 40, 30}},
		{"keep 2", 2, 0, []int64{1, 2, 3, 4}, []int64{4, 3}},
		{"keep every 20", 2, 20, []int64{10, 20, 30, 40, 50, 60, 70}, []int64{70, 60, 40, 20}},
		{"keep all", -1, 0, []int64{1, 2, 3, 4}, []int64{4, 3, 2, 1}},
		{"fewer than keep", 3, 0, []int64{5, 6}, []int64{6, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := NewWriter(dir, Options{Keep: tt.keep, KeepEvery: tt.every})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.saves {
				if err := w.Save(testState(1, s)); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			cps, err := List(dir)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, c := range cps {
				got = append(got, c.Step)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("kept %v, want %v", got, tt.want)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("leftovers %v", l)
			}
		})
	}
}

func TestRetentionRefusesKeepOne(t *testing.T) {
	_, err := NewWriter(t.TempDir(), Options{Keep: 1})
	if err == nil || !strings.Contains(err.Error(), "keep at least 2") {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewWriter(t.TempDir(), Options{KeepEvery: -5}); err == nil {
		t.Fatal("negative keep-every accepted")
	}
}
