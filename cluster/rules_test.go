package cluster

import (
	"slices"
	"testing"
	"time"
)

func ring(names ...string) []Member {
	out := make([]Member, len(names))
	for i, n := range names {
		out[i] = Member{Name: n, Addr: n + ":1"}
	}
	return out
}

func TestQuorum(t *testing.T) {
	tests := []struct {
		name      string
		next      []Member
		base      []Member
		minNodes  int
		wantAllow bool
	}{
		{"first generation at min", ring("a", "b", "c"), nil, 3, true},
		{"first generation below min", ring("a", "b"), nil, 3, false},
		{"majority of three kept", ring("a", "b"), ring("a", "b", "c"), 1, true},
		{"one of three kept", ring("c"), ring("a", "b", "c"), 1, false},
		{"one of three plus joiners", ring("c", "d", "e"), ring("a", "b", "c"), 1, false},
		{"half of four is not a majority", ring("a", "b"), ring("a", "b", "c", "d"), 1, false},
		{"three of four", ring("a", "b", "c"), ring("a", "b", "c", "d"), 1, true},
		{"majority but below min", ring("a", "b"), ring("a", "b", "c"), 3, false},
		{"growth", ring("a", "b", "c", "d"), ring("a", "b", "c"), 3, true},
		{"empty ring", nil, nil, 1, false},
	}
	for _, tc := range tests {
		if got := quorum(tc.next, tc.base, tc.minNodes); got != tc.wantAllow {
			t.Errorf("%s: quorum = %v, want %v", tc.name, got, tc.wantAllow)
		}
	}
}

func info(name string, st State, gen uint64) MemberInfo {
	return MemberInfo{Name: name, Meta: Meta{GRPCAddr: name + ":1", State: st, Gen: gen}}
}

func TestPickCoordinator(t *testing.T) {
	tests := []struct {
		name string
		view []MemberInfo
		want string
	}{
		{"lowest ready", []MemberInfo{info("a", StateReady, 0), info("b", StateReady, 0)}, "a"},
		{"newest generation first", []MemberInfo{info("a", StateReady, 1), info("b", StateTraining, 2), info("c", StateTraining, 2)}, "b"},
		{"joining and leaving never", []MemberInfo{info("a", StateJoining, 0), info("b", StateLeaving, 3), info("c", StateTraining, 2)}, "c"},
		{"nobody eligible", []MemberInfo{info("a", StateJoining, 0)}, ""},
	}
	for _, tc := range tests {
		if got, _ := pickCoordinator(tc.view); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestDesiredRing(t *testing.T) {
	cur := Generation{ID: 4, Ring: ring("b", "d", "f")}
	view := []MemberInfo{
		info("a", StateReady, 0), info("b", StateTraining, 4), info("c", StateReady, 0),
		info("d", StateTraining, 4), info("e", StateJoining, 0), info("f", StateLeaving, 4),
		info("g", StateReady, 2),
	}
	tests := []struct {
		name      string
		penalty   map[string]time.Time
		maxNodes  int
		want      []string
		wantFresh []string
	}{
		{"all eligible", nil, 0, []string{"a", "b", "c", "d", "g"}, []string{"a", "c", "g"}},
		{"members before joiners", nil, 3, []string{"a", "b", "d"}, []string{"a"}},
		{"penalized left out", map[string]time.Time{"d": {}, "a": {}}, 0, []string{"b", "c", "g"}, []string{"c", "g"}},
	}
	for _, tc := range tests {
		got := desiredRing(view, cur, tc.penalty, tc.maxNodes)
		var names, fresh []string
		for _, m := range got {
			names = append(names, m.Name)
			if m.Fresh {
				fresh = append(fresh, m.Name)
			}
		}
		if !slices.Equal(names, tc.want) || !slices.Equal(fresh, tc.wantFresh) {
			t.Errorf("%s: ring %v fresh %v, want %v fresh %v", tc.name, names, fresh, tc.want, tc.wantFresh)
		}
	}
	// Before the first generation nobody is fresh.
	for _, m := range desiredRing(view, Generation{}, nil, 0) {
		if m.Fresh {
			t.Errorf("first generation marks %s fresh", m.Name)
		}
	}
}
