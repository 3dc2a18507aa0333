package store

import (
	"math/rand/v2"
	"testing"
)

func TestCombineCRC32C(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct{ a, b int }{
		{0, 0}, {0, 1}, {1, 0}, {1, 1}, {3, 5}, {1000, 1}, {7, 4096}, {65536, 65537}, {1 << 19, 1 << 19},
	} {
		a, b := buf[:tc.a], buf[tc.a:tc.a+tc.b]
		want := CRC32C(buf[:tc.a+tc.b])
		if got := CombineCRC32C(CRC32C(a), CRC32C(b), int64(len(b))); got != want {
			t.Errorf("combine(%d, %d) = %08x, want %08x", tc.a, tc.b, got, want)
		}
	}
	// Many parts folded left, as completion does.
	var crc uint32
	off := 0
	for _, n := range []int{5, 0, 17, 4096, 100000, 1} {
		crc = CombineCRC32C(crc, CRC32C(buf[off:off+n]), int64(n))
		off += n
	}
	if want := CRC32C(buf[:off]); crc != want {
		t.Errorf("folded = %08x, want %08x", crc, want)
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	long := make([]byte, MaxKeyLength+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"dir/sub/file.tar.gz", true},
		{"héllo wörld/日本", true},
		{"a..b/..c", true},
		{string(long[:MaxKeyLength]), true},
		{"", false},
		{string(long), false},
		{"bad\xffutf8", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"../etc/passwd", false},
		{"a/../b", false},
		{"a/./b", false},
		{".", false},
		{".ferry/uploads/x", false},
		{".ferry", false},
		{".ferryish", true},
	} {
		err := ValidateKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
	}
}
