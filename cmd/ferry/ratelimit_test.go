package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestRateLimited: request and response bodies of requests made at once
// share the one limit. Two requests each send and receive 512 KiB (2 MiB in
// all) at 1 MiB/s, so they cannot end before 2 MiB minus the burst has
// waited its turn: 1.75 s. (Only this lower bound is asserted: a busy
// machine makes the transfer slower, never faster.) The bytes arrive
// intact both ways.
func TestRateLimited(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(b) // echo
	}))
	defer srv.Close()
	const rate, each = 1 << 20, 512 << 10
	hc := &http.Client{Transport: newRateLimited(http.DefaultTransport, rate)}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := bytes.Repeat([]byte{byte('a' + i)}, each)
			res, err := hc.Post(srv.URL, "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			got, err := io.ReadAll(res.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("request %d: echoed %d bytes (%v), want the %d sent", i, len(got), err, len(body))
			}
		}()
	}
	wg.Wait()
	min := time.Duration(float64(4*each-rateLimitBurst) / rate * float64(time.Second))
	if elapsed := time.Since(start); elapsed < min {
		t.Errorf("2 MiB moved in %v at 1 MiB/s; the limit allows no less than %v", elapsed, min)
	}
}

// TestRateLimitedCanceled: a transfer waiting for the limit ends with its
// request's context.
func TestRateLimitedCanceled(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, 1<<20))
	}))
	defer srv.Close()
	hc := &http.Client{Transport: newRateLimited(http.DefaultTransport, 1<<10)} // 1 KiB/s: 1 MiB takes 17 min
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadFull(res.Body, make([]byte, 1<<10)); err != nil { // the first burst
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Error("the read went on after its context was canceled")
	}
}

// TestLimitRateCLI: ferry upload and download with --limit-rate move the
// file intact and no faster than the limit: 3 MiB up and back at 2 MiB/s
// take at least 3 MiB minus the burst over 2 MiB/s each way.
func TestLimitRateCLI(t *testing.T) {
	t.Parallel()
	url := startServer(t)
	dir := t.TempDir()
	data := randomBytes(7, 3<<20)
	file := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e := env("FERRY_SERVER", url, "FERRY_LIMIT_RATE", "2MiB")
	const min = time.Duration(float64(3<<20-rateLimitBurst) / (2 << 20) * float64(time.Second))
	start := time.Now()
	if r := ferry(t, nil, e, "upload", "--quiet", file, "limited"); r.code != 0 {
		t.Fatalf("upload: status %d, stderr %q", r.code, r.stderr)
	}
	if elapsed := time.Since(start); elapsed < min {
		t.Errorf("3 MiB uploaded in %v with FERRY_LIMIT_RATE=2MiB; the limit allows no less than %v", elapsed, min)
	}
	out := filepath.Join(dir, "out.bin")
	start = time.Now()
	if r := ferry(t, nil, e, "download", "--quiet", "--limit-rate", "2MiB", "limited", out); r.code != 0 {
		t.Fatalf("download: status %d, stderr %q", r.code, r.stderr)
	}
	if elapsed := time.Since(start); elapsed < min {
		t.Errorf("3 MiB downloaded in %v with --limit-rate 2MiB; the limit allows no less than %v", elapsed, min)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Errorf("downloaded %d bytes that differ from the %d uploaded (%v)", len(got), len(data), err)
	}
}
