//go:build unix

package main

import (
	"bufio"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShutdownWhenParentExits starts the server from a shell, as `go run`
// starts the binary it built, and kills the shell with SIGKILL while an
// order is in progress, as when `go run` itself is killed: the server
// notices (-exit-with-parent, on by default under go run), finishes the
// order, stops listening and exits.
func TestShutdownWhenParentExits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command and starts processes; skipped with -short")
	}
	bin, err := buildCommand(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("/bin/sh", "-c", `"$0" -addr 127.0.0.1:0 -latency 1s -exit-with-parent & wait`, bin)
	stderr, err := sh.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sh.Process.Kill(); _ = sh.Wait() })

	lines := make(chan string, 64)
	go func() {
		defer close(lines) // the server, holding the pipe, has exited
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var log strings.Builder
	waitFor := func(what string) string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("the server exited before logging %q:\n%s", what, log.String())
				}
				log.WriteString(line + "\n")
				if strings.Contains(line, what) {
					return line
				}
			case <-timeout:
				t.Fatalf("no %q in 30s:\n%s", what, log.String())
			}
		}
	}
	serving := waitFor(`msg="orders: serving"`)
	m := servingAddr.FindStringSubmatch(serving)
	if m == nil {
		t.Fatalf("no address in the log:\n%s", log.String())
	}
	if pid, err := strconv.Atoi(serving[strings.LastIndex(serving, "pid=")+len("pid="):]); err == nil {
		// An orphan that failed to stop must not outlive the test.
		t.Cleanup(func() {
			if t.Failed() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
	base := "http://" + m[1]

	answered := make(chan answer, 1)
	go func() {
		a, err := send(http.MethodPost, base+"/orders", "order-parent-1", `{"sku":"MUG","qty":1}`)
		if err != nil {
			a.body = err.Error()
		}
		answered <- a
	}()
	waitFor("outcome=executed")
	if err := sh.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor("the parent process exited")
	if a := <-answered; a.status != http.StatusCreated {
		t.Errorf("the order in progress when the parent exited got %d %s, want 201", a.status, a.body)
	}
	waitFor(`msg="orders: stopped"`)
	for range lines {
	}
	if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the server stopped", m[1])
	}
}
