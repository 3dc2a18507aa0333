package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	ferryv1 "github.com/ferryhq/ferry/proto/ferry/v1"
	"github.com/ferryhq/ferry/upload"
)

// selfSignedCert writes a fresh self-signed ECDSA certificate for 127.0.0.1
// and localhost, and its key, as PEM files, and returns their paths and a
// pool trusting the certificate.
func selfSignedCert(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "ferry test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// protoRecorder is an http.RoundTripper that records the HTTP version of
// every response.
type protoRecorder struct {
	rt     http.RoundTripper
	mu     sync.Mutex
	protos map[string]int
}

func (p *protoRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := p.rt.RoundTrip(req)
	if err == nil {
		p.mu.Lock()
		p.protos[res.Proto]++
		p.mu.Unlock()
	}
	return res, err
}

// TestTLS serves with --tls-cert and --tls-key (a self-signed certificate
// made here) and tokens, and shows: every protocol round-trips a
// multi-chunk object over TLS, gRPC and Connect over HTTP/2 (negotiated by
// ALPN) and gRPC-Web over HTTP/1.1; the CLI works with --ca-cert; a client
// that does not trust the certificate and a plaintext client both fail.
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSignedCert(t)
	srv := startServer(t, "--data", t.TempDir(), "--token-file", writeTokenFile(t),
		"--tls-cert", certFile, "--tls-key", keyFile, "--chunk-size", "5MiB")
	if !strings.Contains(srv.logs.String(), "tls=true") {
		t.Errorf("server did not log tls=true:\n%s", srv.logs)
	}
	base := "https://" + srv.addr

	content := patternReader{seed: 5, size: 11*MiB + 7}
	want := make([]byte, content.size)
	_, _ = content.ReadAt(want, 0)
	for _, c := range []struct {
		protocol, proto string
		http1           bool
	}{
		{"grpc", "HTTP/2.0", false},
		{"connect", "HTTP/2.0", false},
		{"grpcweb", "HTTP/1.1", true},
	} {
		t.Run(c.protocol, func(t *testing.T) {
			t.Parallel()
			// The test's own context: a parallel subtest may wait for its
			// turn for longer than any fixed deadline set before it.
			ctx := t.Context()
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: !c.http1}
			if c.http1 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only, as a browser may
			}
			rec := &protoRecorder{rt: tr, protos: map[string]int{}}
			hc := &http.Client{Transport: rec}
			defer tr.CloseIdleConnections()
			cl := newSecClients(hc, base, c.protocol, aliceToken)
			key := "team-a/tls-" + c.protocol
			obj, err := upload.NewUploader(cl.upload, upload.UploaderOptions{ChunkSize: 5 * MiB}).Upload(ctx, key, content, content.size, upload.ObjectOptions{})
			if err != nil {
				t.Fatalf("upload over TLS: %v", err)
			}
			if obj.GetSize() != content.size {
				t.Errorf("stored %d bytes, want %d", obj.GetSize(), content.size)
			}
			stream, err := cl.download.Download(ctx, connect.NewRequest(&ferryv1.DownloadRequest{Key: key}))
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for stream.Receive() {
				got = append(got, stream.Msg().GetData()...)
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("download over TLS: %v", err)
			}
			stream.Close()
			if !bytes.Equal(got, want) {
				t.Errorf("downloaded %d bytes that differ from the %d uploaded", len(got), len(want))
			}
			if len(rec.protos) != 1 || rec.protos[c.proto] == 0 {
				t.Errorf("responses by HTTP version: %v, want all %s", rec.protos, c.proto)
			}
			// The wrong token is still refused over TLS.
			bad := newSecClients(hc, base, c.protocol, wrongToken)
			if _, err := bad.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: key})); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("wrong token over TLS: %v, want unauthenticated", err)
			}
		})
	}

	t.Run("cli", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "in"), filepath.Join(dir, "out")
		if err := os.WriteFile(src, want[:6*MiB+1], 0o600); err != nil {
			t.Fatal(err)
		}
		mustFerry(t, "upload", "-q", "--server", base, "--protocol", "grpc", "--ca-cert", certFile, "--token", aliceToken, src, "team-a/tls-cli")
		mustFerry(t, "download", "-q", "--server", base, "--ca-cert", certFile, "--token", aliceToken, "team-a/tls-cli", dst)
		if b, err := os.ReadFile(dst); err != nil || !bytes.Equal(b, want[:6*MiB+1]) {
			t.Errorf("CLI round trip over TLS: %d bytes, %v", len(b), err)
		}
		// Without --ca-cert the self-signed certificate is not trusted.
		r := ferry(t, "stat", "--server", base, "--token", aliceToken, "team-a/tls-cli")
		if r.err == nil || !strings.Contains(r.stderr, "certificate") {
			t.Errorf("CLI without --ca-cert: err %v, stderr %q; want a certificate error", r.err, r.stderr)
		}
	})

	t.Run("plaintext-refused", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		cl := newSecClients(secHTTPClient(t, "connect"), "http://"+srv.addr, "connect", aliceToken)
		if _, err := cl.objects.StatObject(ctx, connect.NewRequest(&ferryv1.StatObjectRequest{Key: "team-a/x"})); err == nil || connect.CodeOf(err) == connect.CodeNotFound {
			t.Errorf("plaintext request to the TLS port: %v, want a transport failure", err)
		}
	})
}
