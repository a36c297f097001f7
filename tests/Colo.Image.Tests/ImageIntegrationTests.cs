using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;

namespace Colo.Image.Tests;

/// <summary>
/// Builds the real image from Debian packages and boots it under QEMU (TCG). Needs root, apt and
/// qemu-system-x86_64; returns early (passes with a message) otherwise.
/// </summary>
public class ImageIntegrationTests(ITestOutputHelper output)
{
    private static bool CanRun(ITestOutputHelper output, bool needQemu)
    {
        if (Environment.UserName != "root" && !string.Equals(Environment.GetEnvironmentVariable("USER"), "root", StringComparison.Ordinal))
        {
            output.WriteLine("SKIPPED: needs root");
            return false;
        }
        if (!File.Exists("/usr/bin/apt-get"))
        {
            output.WriteLine("SKIPPED: needs apt-get (Debian)");
            return false;
        }
        if (needQemu && !File.Exists("/usr/bin/qemu-system-x86_64"))
        {
            output.WriteLine("SKIPPED: needs qemu-system-x86_64");
            return false;
        }
        return true;
    }

    [Fact]
    public async Task Build_ThenEnsure_UsesCache_AndForceRebuildsAtomically()
    {
        if (!CanRun(output, needQemu: false)) return;
        var root = Directory.CreateTempSubdirectory("colo-image-test").FullName;
        try
        {
            var b = new GuestImageBuilder(root, new TestLogger(output));
            var sw = Stopwatch.StartNew();
            var img = await b.EnsureAsync(CancellationToken.None);
            output.WriteLine($"cold build: {sw.Elapsed.TotalSeconds:0.00} s -> {img.CacheDirectory}");
            Assert.True(File.Exists(img.KernelPath));
            Assert.True(File.Exists(img.InitrdPath));
            Assert.Equal(Path.Combine(root, img.InputsHash), img.CacheDirectory);
            Assert.True(File.Exists(Path.Combine(img.CacheDirectory, GuestImageBuilder.ManifestFileName)));
            output.WriteLine(File.ReadAllText(Path.Combine(img.CacheDirectory, GuestImageBuilder.ManifestFileName)));
            var initrdTime = File.GetLastWriteTimeUtc(img.InitrdPath);

            sw.Restart();
            var again = await b.EnsureAsync(CancellationToken.None);
            output.WriteLine($"cached EnsureAsync: {sw.Elapsed.TotalMilliseconds:0} ms");
            Assert.Equal(img, again);
            Assert.Equal(initrdTime, File.GetLastWriteTimeUtc(again.InitrdPath));

            // A fresh builder instance (new process in real life) also hits the cache.
            var again2 = await new GuestImageBuilder(root, new TestLogger(output)).EnsureAsync(CancellationToken.None);
            Assert.Equal(img, again2);

            // Non-forced build is a cache hit too.
            Assert.Equal(img, await b.BuildAsync(force: false, CancellationToken.None));

            // Deterministic initramfs: a forced rebuild yields identical bytes and the same hash.
            var before = await File.ReadAllBytesAsync(img.InitrdPath);
            sw.Restart();
            var forced = await b.BuildAsync(force: true, CancellationToken.None);
            output.WriteLine($"forced rebuild: {sw.Elapsed.TotalSeconds:0.00} s");
            Assert.Equal(img.InputsHash, forced.InputsHash);
            Assert.Equal(before, await File.ReadAllBytesAsync(forced.InitrdPath));
            Assert.Empty(Directory.GetDirectories(root, ".tmp-*"));
            Assert.Empty(Directory.GetDirectories(root, ".trash-*"));

            // A crashed build's leftovers are cleaned up and ignored.
            Directory.CreateDirectory(Path.Combine(root, ".tmp-crashed", "out"));
            await b.BuildAsync(force: true, CancellationToken.None);
            Assert.Empty(Directory.GetDirectories(root, ".tmp-*"));

            // A corrupted cache entry is detected and rebuilt.
            File.WriteAllText(img.InitrdPath, "truncated");
            var repaired = await b.EnsureAsync(CancellationToken.None);
            Assert.Equal(before, await File.ReadAllBytesAsync(repaired.InitrdPath));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Ensure_FallsBackToCachedImage_WhenAptUnusable()
    {
        if (!CanRun(output, needQemu: false)) return;
        var img = await new GuestImageBuilder(GuestImageBuilder.DefaultCacheRoot, new TestLogger(output))
            .EnsureAsync(CancellationToken.None);
        var root = Directory.CreateTempSubdirectory("colo-image-fallback").FullName;
        try
        {
            var copy = Path.Combine(root, img.InputsHash);
            Directory.CreateDirectory(copy);
            foreach (var f in Directory.GetFiles(img.CacheDirectory)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
            var broken = new GuestImageBuilder(root, new TestLogger(output)) { AptCacheTool = "/nonexistent/apt-cache" };
            var got = await broken.EnsureAsync(CancellationToken.None);
            Assert.Equal(copy, got.CacheDirectory);
            Assert.Equal(img.InputsHash, got.InputsHash);
            var e = await Assert.ThrowsAsync<ImageBuildException>(() => broken.BuildAsync(false, CancellationToken.None));
            Assert.Equal("host tools", e.Step);
            // Without any cached image the error surfaces from EnsureAsync too.
            Directory.Delete(copy, true);
            await Assert.ThrowsAsync<ImageBuildException>(() => broken.EnsureAsync(CancellationToken.None));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <param name="withRng">Also attach virtio-rng-pci (recommended for the launcher: ~1-2 s faster READY under TCG).</param>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Image_BootsUnderQemu_RedisAndHttpServe(bool withRng)
    {
        if (!CanRun(output, needQemu: true)) return;
        var sw = Stopwatch.StartNew();
        var img = await new GuestImageBuilder(GuestImageBuilder.DefaultCacheRoot, new TestLogger(output))
            .EnsureAsync(CancellationToken.None);
        output.WriteLine($"EnsureAsync (default cache root): {sw.Elapsed.TotalSeconds:0.00} s; " +
                         $"initrd {new FileInfo(img.InitrdPath).Length} bytes, kernel {new FileInfo(img.KernelPath).Length} bytes");

        var id = $"colo-image-test-{Environment.ProcessId}-{Guid.NewGuid():N}"[..40];
        var ram = $"/dev/shm/{id}.ram";
        var log = Path.Combine(Path.GetTempPath(), $"{id}.serial.log");
        var pRedis = FreePort();
        var pHttp = FreePort();
        var psi = new ProcessStartInfo("/usr/bin/qemu-system-x86_64")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var a in new[]
                 {
                     "-accel", "tcg", "-machine", "q35,memory-backend=mem",
                     "-object", $"memory-backend-file,id=mem,size=256M,mem-path={ram},share=on",
                     "-m", "256M", "-smp", "1", "-nodefaults", "-display", "none", "-vga", "none",
                     "-serial", $"file:{log}", "-kernel", img.KernelPath, "-initrd", img.InitrdPath,
                     "-append", GuestKernelCmdline.Build("10.0.2.15/24"),
                     "-netdev", $"user,id=n0,hostfwd=tcp:127.0.0.1:{pRedis}-:6379,hostfwd=tcp:127.0.0.1:{pHttp}-:80",
                     "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=",
                 })
            psi.ArgumentList.Add(a);
        if (withRng)
            foreach (var a in new[] { "-device", "virtio-rng-pci,romfile=" }) psi.ArgumentList.Add(a);

        Process? qemu = null;
        try
        {
            sw.Restart();
            qemu = Process.Start(psi)!;
            var qemuErr = qemu.StandardError.ReadToEndAsync();
            var ready = false;
            while (sw.Elapsed < TimeSpan.FromSeconds(120))
            {
                if (qemu.HasExited) break;
                if (File.Exists(log) && ReadShared(log).Contains(GuestImageBuilder.ReadyMarker)) { ready = true; break; }
                await Task.Delay(100);
            }
            var bootTime = sw.Elapsed;
            var serial = File.Exists(log) ? ReadShared(log) : "";
            output.WriteLine("---- serial log ----\n" + serial + "\n--------------------");
            if (qemu.HasExited) output.WriteLine("qemu stderr: " + await qemuErr);
            Assert.True(ready, $"guest did not print {GuestImageBuilder.ReadyMarker} within 120 s");
            output.WriteLine($"boot to {GuestImageBuilder.ReadyMarker} (virtio-rng: {withRng}): {bootTime.TotalSeconds:0.00} s");
            Assert.DoesNotContain("failed", serial);

            // Redis: INCR twice.
            using (var c = new TcpClient())
            {
                await c.ConnectAsync(IPAddress.Loopback, pRedis);
                c.ReceiveTimeout = 10_000;
                var s = c.GetStream();
                var r = new StreamReader(s, Encoding.ASCII);
                await s.WriteAsync("INCR x\r\n"u8.ToArray());
                Assert.Equal(":1", await r.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)));
                await s.WriteAsync("INCR x\r\n"u8.ToArray());
                Assert.Equal(":2", await r.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)));
            }

            // HTTP: static page and the in-memory counter.
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
            var index = await http.GetStringAsync($"http://127.0.0.1:{pHttp}/index.html");
            Assert.Contains("COLO guest", index);
            var c1 = await http.GetStringAsync($"http://127.0.0.1:{pHttp}/cgi-bin/counter");
            var c2 = await http.GetStringAsync($"http://127.0.0.1:{pHttp}/cgi-bin/counter");
            output.WriteLine($"counter responses: {c1.Trim()} / {c2.Trim()}");
            Assert.Equal("counter=1\n", c1);
            Assert.Equal("counter=2\n", c2);
        }
        finally
        {
            if (qemu is not null)
            {
                try { if (!qemu.HasExited) qemu.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                qemu.WaitForExit(10_000);
                qemu.Dispose();
            }
            File.Delete(ram);
            File.Delete(log);
        }
    }

    private static string ReadShared(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return new StreamReader(fs).ReadToEnd();
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var p = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return p;
    }
}
