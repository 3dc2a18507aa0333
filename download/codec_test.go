package download_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/ferryhq/ferry/download"
)

// TestDownloaderWithDataBuffers downloads objects of several sizes over
// each protocol with a client made with WithDataBuffers, several at once
// through one Downloader, so that recycled buffers are in use by several
// streams at a time, and checks every byte: a buffer recycled while still
// in use would corrupt another stream's data.
func TestDownloaderWithDataBuffers(t *testing.T) {
	t.Parallel()
	srv := newServer(t)
	sizes := []int{1, mib - 1, mib, 5*mib + 17}
	objects := make([][]byte, len(sizes))
	for i, n := range sizes {
		objects[i] = randomBytes(uint64(100+i), n)
		srv.put(t, fmt.Sprintf("buf/%d", i), objects[i])
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			d := download.NewDownloader(srv.client(t, p.name, nil, download.WithDataBuffers()), download.DownloaderOptions{
				Concurrency: 3,
				RangeSize:   2 * mib,
			})
			var wg sync.WaitGroup
			for i, want := range objects {
				for _, parallel := range []bool{false, true} {
					wg.Go(func() {
						got, err := download1(context.Background(), d, parallel, fmt.Sprintf("buf/%d", i))
						switch {
						case err != nil:
							t.Errorf("%d bytes (parallel %v): %v", len(want), parallel, err)
						case !bytes.Equal(got, want):
							t.Errorf("%d bytes (parallel %v): got %d bytes that differ", len(want), parallel, len(got))
						}
					})
				}
			}
			wg.Wait()
		})
	}
}
