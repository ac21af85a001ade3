package node

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// A step whose loss went NaN is written with null values and read back as
// NaN; before, encoding/json refused the record ("unsupported value: NaN")
// and the line was lost.
func TestRecordKeepsNonFiniteAsNull(t *testing.T) {
	var buf bytes.Buffer
	w := &RecordWriter{enc: json.NewEncoder(&buf)}
	recs := []Record{
		{Time: time.Unix(100, 0).UTC(), Step: 1, Loss: 3.5, Elbo: 2, PPL: math.Exp(2), Members: 2, Generation: 4},
		{Time: time.Unix(101, 0).UTC(), Step: 2, Loss: math.NaN(), Elbo: math.Inf(1), KL: math.Inf(-1), PPL: math.NaN(), Skipped: true},
	}
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatalf("write step %d: %v", r.Step, err)
		}
	}
	if !strings.Contains(buf.String(), `"loss":null`) {
		t.Fatalf("NaN loss not written as null:\n%s", buf.String())
	}
	got, err := ReadRecords(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("read %d records, want 2", len(got))
	}
	if got[0] != recs[0] {
		t.Errorf("record 1 read back as %+v, want %+v", got[0], recs[0])
	}
	r := got[1]
	if !math.IsNaN(r.Loss) || !math.IsNaN(r.Elbo) || !math.IsNaN(r.KL) || !math.IsNaN(r.PPL) || r.Step != 2 || !r.Skipped || r.IS != 0 {
		t.Errorf("record 2 read back as %+v", r)
	}
}

// Files written before the null encoding still read: missing numbers are 0.
func TestReadRecordsOldLines(t *testing.T) {
	got, err := ReadRecords(strings.NewReader(`{"time":"2026-01-02T03:04:05Z","step":7,"loss":1.5,"members":1}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Step != 7 || got[0].Loss != 1.5 || got[0].Elbo != 0 {
		t.Fatalf("read %+v", got)
	}
}

func FuzzReadRecords(f *testing.F) {
	f.Add([]byte(`{"time":"2026-01-02T03:04:05Z","step":7,"loss":null,"members":1}` + "\n"))
	f.Add([]byte(`{"step":1,"loss":1e400}`))
	f.Add([]byte("{}\n\n{\"kl_loss\":null}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := ReadRecords(bytes.NewReader(b))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		w := &RecordWriter{enc: json.NewEncoder(&buf)}
		for _, r := range recs {
			if err := w.Write(r); err != nil {
				t.Fatalf("re-encoding %+v: %v", r, err)
			}
		}
		again, err := ReadRecords(&buf)
		if err != nil || len(again) != len(recs) {
			t.Fatalf("round trip: %d records, err %v; want %d", len(again), err, len(recs))
		}
	})
}
