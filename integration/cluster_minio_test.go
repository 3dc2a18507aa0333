package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	// clusterStartTimeout bounds how long distributed MinIO takes until
	// every node answers and an object written through each node reads
	// through every other. Nodes wait for each other at start; on a busy
	// machine this takes seconds.
	clusterStartTimeout = 3 * time.Minute
)

// minioCluster is MinIO in distributed mode on one host: one `minio server`
// process per node, each on its own loopback port with one drive (a
// directory), all given the same list of endpoints, so that objects are
// erasure-coded across the nodes. With 4 nodes MinIO picks EC:2 (2 data
// and 2 parity shards per object): any one node may be down and every
// object can still be read and written.
type minioCluster struct {
	t         testing.TB
	bin       string
	accessKey string
	secretKey string
	addrs     []string // host:port of each node
	endpoints []string // the server arguments, http://host:port/dir
	nodes     []*minioNode
}

// minioNode is one process of a minioCluster.
type minioNode struct {
	addr string
	logs *lockedBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startMinIOCluster starts n MinIO nodes in distributed mode, waits until
// the cluster is whole (see minioCluster.waitWhole) and stops every node
// when the test ends. Without the MinIO binary the test is skipped, or
// fails when FERRY_REQUIRE_S3=1.
func startMinIOCluster(t testing.TB, n int) *minioCluster {
	t.Helper()
	bin := os.Getenv("FERRY_TEST_MINIO_BIN")
	if bin == "" {
		bin = filepath.Join(toolsDir(), "bin", "minio")
	}
	if !fileExists(bin) {
		msg := "MinIO server binary not found at " + bin + " (FERRY_TEST_MINIO_BIN or the tools dir): run bash scripts/tools.sh"
		if os.Getenv("FERRY_REQUIRE_S3") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := &minioCluster{
		t:         t,
		bin:       bin,
		accessKey: "clustertest",
		secretKey: strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36),
	}
	dir := t.TempDir()
	// The ports are probed free, then released for MinIO to bind; all of
	// them are fixed before any node starts, since each node is given
	// the whole list.
	var lns []net.Listener
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		c.addrs = append(c.addrs, ln.Addr().String())
		c.endpoints = append(c.endpoints, fmt.Sprintf("http://%s%s", ln.Addr(), filepath.Join(dir, fmt.Sprintf("drive%d", i+1))))
	}
	for _, ln := range lns {
		ln.Close()
	}
	t.Cleanup(func() {
		for i, node := range c.nodes {
			node.stop()
			if t.Failed() {
				t.Logf("MinIO node %d (%s) logs:\n%s", i+1, node.addr, node.logs)
			}
		}
	})
	for _, addr := range c.addrs {
		node := &minioNode{addr: addr, logs: &lockedBuffer{}}
		c.nodes = append(c.nodes, node)
		if err := c.spawn(node); err != nil {
			t.Fatalf("start MinIO node %s: %v", addr, err)
		}
	}
	c.waitWhole(t)
	return c
}

// spawn starts node's process.
func (c *minioCluster) spawn(node *minioNode) error {
	args := append([]string{"server", "--address", node.addr, "--quiet"}, c.endpoints...)
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+c.accessKey,
		"MINIO_ROOT_PASSWORD="+c.secretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		// The drives are directories on the root file system, which
		// MinIO refuses outside CI/CD mode.
		"MINIO_CI_CD=1",
		// Which endpoint is this process: in a container, MinIO otherwise
		// waits for 127.0.0.1 "to resolve" to decide.
		"_MINIO_SERVER_LOCAL="+node.addr,
	)
	cmd.SysProcAttr = childProcAttr()
	cmd.Stdout, cmd.Stderr = node.logs, node.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	node.mu.Lock()
	node.cmd, node.done = cmd, done
	node.mu.Unlock()
	return nil
}

// stop kills the node's process (SIGKILL: a node lost, not shut down) and
// waits for it to exit. It does nothing when the node is not running.
func (node *minioNode) stop() {
	node.mu.Lock()
	defer node.mu.Unlock()
	if node.cmd == nil {
		return
	}
	_ = node.cmd.Process.Kill()
	<-node.done
	node.cmd = nil
}

// running reports whether the node's process is alive.
func (node *minioNode) running() bool {
	node.mu.Lock()
	defer node.mu.Unlock()
	if node.cmd == nil {
		return false
	}
	select {
	case <-node.done:
		return false
	default:
		return true
	}
}

// kill stops node i (0-based) with SIGKILL.
func (c *minioCluster) kill(i int) { c.nodes[i].stop() }

// restart starts node i again on its port with its drive, and waits until
// the cluster is whole again.
func (c *minioCluster) restart(t testing.TB, i int) {
	t.Helper()
	if err := c.spawn(c.nodes[i]); err != nil {
		t.Fatalf("restart MinIO node %d: %v", i+1, err)
	}
	c.waitWhole(t)
}

// client returns a minio-go client of node i, for the test's own checks.
func (c *minioCluster) client(t testing.TB, i int) *minio.Client {
	t.Helper()
	mc, err := minio.New(c.addrs[i], &minio.Options{Creds: credentials.NewStaticV4(c.accessKey, c.secretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// env returns the cluster as an s3Env whose endpoint is node i.
func (c *minioCluster) env(i int) s3Env {
	return s3Env{endpoint: c.addrs[i], accessKey: c.accessKey, secretKey: c.secretKey}
}

// waitWhole waits until the cluster is whole: every node's process runs and
// answers /minio/health/live, every node reports the cluster healthy
// (/minio/health/cluster: its erasure sets have write quorum), and an
// object written through each node reads back, byte for byte, through
// every other. One node's health is not the cluster's: a node answers
// live before it has found its peers.
func (c *minioCluster) waitWhole(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	start := time.Now()
	hc := &http.Client{Timeout: 5 * time.Second}
	healthy := func(addr, path string) bool {
		res, err := hc.Get("http://" + addr + path)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}
	for i, node := range c.nodes {
		for !healthy(node.addr, "/minio/health/live") || !healthy(node.addr, "/minio/health/cluster") {
			if !node.running() {
				t.Fatalf("MinIO node %d (%s) exited:\n%s", i+1, node.addr, node.logs)
			}
			if ctx.Err() != nil {
				t.Fatalf("MinIO node %d (%s) not healthy within %v:\n%s", i+1, node.addr, clusterStartTimeout, node.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Through each node, write; through every other, read.
	const bucket = "ferry-cluster-probe"
	mc0 := c.client(t, 0)
	for {
		err := mc0.MakeBucket(ctx, bucket, minio.MakeBucketOptions{})
		if code := minio.ToErrorResponse(err).Code; err == nil || code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create bucket %s through MinIO node 1: %v", bucket, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range c.nodes {
		key := fmt.Sprintf("probe-%d-%d", i, rand.Uint64())
		data := []byte("written through node " + strconv.Itoa(i+1) + ": " + key)
		for {
			_, err := c.client(t, i).PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("write %s through MinIO node %d: %v", key, i+1, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for j := range c.nodes {
			for {
				got, err := readObject(ctx, c.client(t, j), bucket, key)
				if err == nil && bytes.Equal(got, data) {
					break
				}
				if err == nil {
					err = fmt.Errorf("read %q, want %q", got, data)
				}
				if ctx.Err() != nil {
					t.Fatalf("read %s (written through node %d) through MinIO node %d: %v", key, i+1, j+1, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if err := c.client(t, i).RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{}); err != nil {
			t.Logf("remove probe object %s: %v", key, err)
		}
	}
	t.Logf("MinIO cluster of %d nodes whole after %v", len(c.nodes), time.Since(start).Round(time.Millisecond))
}

// readObject reads a whole object.
func readObject(ctx context.Context, mc *minio.Client, bucket, key string) ([]byte, error) {
	obj, err := mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// newBucket creates a bucket on the cluster (through node 1) for this test
// alone and removes it, with everything in it, when the test ends.
func (c *minioCluster) newBucket(t testing.TB) string {
	t.Helper()
	return c.env(0).newBucket(t)
}
