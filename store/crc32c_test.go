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
