using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Colo.Vm.Tests;

public sealed class QemuIntegrationTests(ITestOutputHelper output)
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan StateTimeout = TimeSpan.FromSeconds(5);

    [QemuFact]
    public async Task CaptureRepeatedly_ThenLoadIntoStandby_StandbyRuns()
    {
        using VmScratch scratch = new();
        VmSpec specA = scratch.Spec("pvm");
        VmSpec specB = specA with
        {
            Name = "svm",
            NetSocketPath = Path.Combine(scratch.Dir, "svm-net.sock"),
            QmpSocketPath = Path.Combine(scratch.Dir, "svm-qmp.sock"),
            ConsoleLogPath = Path.Combine(scratch.Dir, "svm.log"),
            IncomingDefer = true,
        };

        await using NetSink netA = new(specA.NetSocketPath);
        Stopwatch sw = Stopwatch.StartNew();
        await using QemuProcess a = await QemuProcess.StartAsync(specA, NullLogger.Instance, StartTimeout, CancellationToken.None);
        output.WriteLine($"start A: {sw.Elapsed.TotalMilliseconds:F1} ms, pid {a.Pid}");
        await netA.Connected.Task.WaitAsync(StartTimeout);
        Assert.Equal("running", await a.QueryStatusAsync());
        Assert.Equal(64L * 1024 * 1024, new FileInfo(scratch.RamFile).Length);
        await Task.Delay(300); // let SeaBIOS run

        ArrayBufferWriter<byte> state = new(1 << 20);
        sw.Restart();
        await a.StopAsync();
        int n = await a.CaptureDeviceStateAsync(state, StateTimeout, CancellationToken.None);
        output.WriteLine($"stop+capture #0: {sw.Elapsed.TotalMilliseconds:F2} ms, {n} bytes");
        Assert.InRange(n, 1, 2 * 1024 * 1024);
        Assert.Equal(n, state.WrittenCount);
        Assert.Equal("postmigrate", await a.QueryStatusAsync());
        await a.ContAsync();
        Assert.Equal("running", await a.QueryStatusAsync());

        for (int i = 1; i <= 5; i++)
        {
            await Task.Delay(50);
            state.ResetWrittenCount();
            await a.StopAsync();
            sw.Restart();
            n = await a.CaptureDeviceStateAsync(state, StateTimeout, CancellationToken.None);
            double capture = sw.Elapsed.TotalMilliseconds;
            await a.ContAsync();
            output.WriteLine($"capture #{i}: {capture:F2} ms, {n} bytes; +cont {sw.Elapsed.TotalMilliseconds:F2} ms");
            Assert.InRange(n, 1, 2 * 1024 * 1024);
            Assert.Equal("running", await a.QueryStatusAsync());
        }

        // Final checkpoint: A stays stopped so the RAM file is stable while B takes over.
        state.ResetWrittenCount();
        await a.StopAsync();
        n = await a.CaptureDeviceStateAsync(state, StateTimeout, CancellationToken.None);

        byte[] ramBefore = HashFile(scratch.RamFile);
        await using NetSink netB = new(specB.NetSocketPath);
        sw.Restart();
        await using QemuProcess b = await QemuProcess.StartAsync(specB, NullLogger.Instance, StartTimeout, CancellationToken.None);
        output.WriteLine($"start B (incoming defer): {sw.Elapsed.TotalMilliseconds:F1} ms, pid {b.Pid}");
        await netB.Connected.Task.WaitAsync(StartTimeout);
        Assert.Equal("inmigrate", await b.QueryStatusAsync());
        await Task.Delay(100);
        Assert.Equal(ramBefore, HashFile(scratch.RamFile)); // a QEMU in -incoming defer leaves the shared RAM alone

        sw.Restart();
        await b.LoadDeviceStateAsync(state.WrittenMemory, StateTimeout, CancellationToken.None);
        double load = sw.Elapsed.TotalMilliseconds;
        Assert.Equal("paused", await b.QueryStatusAsync());
        await b.ContAsync();
        output.WriteLine($"load {n} bytes: {load:F2} ms; +cont {sw.Elapsed.TotalMilliseconds:F2} ms");
        await Task.Delay(200);
        Assert.Equal("running", await b.QueryStatusAsync());
        Assert.False(b.HasExited);
        Assert.False(netB.Closed.Task.IsCompleted, "standby's netdev connection survives load + cont");
        Assert.False(netA.Closed.Task.IsCompleted, "source's netdev connection survives repeated captures");

        a.Kill();
        b.Kill();
        Assert.Equal(137, await a.Exited.WaitAsync(StartTimeout));
        Assert.Equal(137, await b.Exited.WaitAsync(StartTimeout));
    }

    [QemuFact]
    public async Task Capture_FailsHalfWay_NextCheckpointIsComplete()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("halfway");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        await q.StopAsync();
        ArrayBufferWriter<byte> good = new();
        int full = await q.CaptureDeviceStateAsync(good, StateTimeout, CancellationToken.None);
        await q.ContAsync();

        await q.StopAsync();
        FailingWriter failing = new(failAfterBytes: 100_000);
        DeviceStateException e = await Assert.ThrowsAsync<DeviceStateException>(
            () => q.CaptureDeviceStateAsync(failing, StateTimeout, CancellationToken.None));
        output.WriteLine(e.ToString());
        Assert.Equal(DeviceStateStep.Transfer, e.Step);
        // QEMU 7.2 leaves the VM in 'postmigrate' even after a failed migration and refuses another
        // migrate until 'cont'; the failed checkpoint is abandoned and the next one starts from a new stop.
        Assert.Equal("postmigrate", await q.QueryStatusAsync());
        await q.ContAsync();
        await q.StopAsync();
        ArrayBufferWriter<byte> again = new();
        int n = await q.CaptureDeviceStateAsync(again, StateTimeout, CancellationToken.None);
        // Complete again: the same size give or take a few bytes of device state that changed while the VM ran.
        Assert.InRange(n, full - full / 100, full + full / 100);
        await q.ContAsync();
        Assert.Equal("running", await q.QueryStatusAsync());
    }

    [QemuFact]
    public async Task Capture_TwiceWithoutCont_Qemu72Refuses_ThenWorksAfterCont()
    {
        // Characterisation of QEMU 7.2: after a completed migration the VM is 'postmigrate' and a
        // second migrate is refused until the VM has been resumed ("Can't migrate the vm that was
        // paused due to previous migration").
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("twice");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        await q.StopAsync();
        ArrayBufferWriter<byte> w = new();
        await q.CaptureDeviceStateAsync(w, StateTimeout, CancellationToken.None);
        DeviceStateException e = await Assert.ThrowsAsync<DeviceStateException>(
            () => q.CaptureDeviceStateAsync(w, StateTimeout, CancellationToken.None));
        Assert.Equal(DeviceStateStep.Start, e.Step);
        Assert.IsType<QmpErrorException>(e.InnerException);
        await q.ContAsync();
        await q.StopAsync();
        w.ResetWrittenCount();
        Assert.True(await q.CaptureDeviceStateAsync(w, StateTimeout, CancellationToken.None) > 0);
    }

    [QemuFact]
    public async Task Capture_Timeout_ThrowsDeviceStateException_ThenRecovers()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("slowcap");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        await q.StopAsync();
        ArrayBufferWriter<byte> w = new();
        await Assert.ThrowsAsync<DeviceStateException>(() => q.CaptureDeviceStateAsync(w, TimeSpan.FromTicks(1), CancellationToken.None));
        if (await q.QueryStatusAsync() == "postmigrate")
        {
            await q.ContAsync();
            await q.StopAsync();
        }

        w.ResetWrittenCount();
        Assert.True(await q.CaptureDeviceStateAsync(w, StateTimeout, CancellationToken.None) > 0);
    }

    private static byte[] HashFile(string path)
    {
        using FileStream fs = new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return System.Security.Cryptography.SHA256.HashData(fs);
    }

    private sealed class FailingWriter(int failAfterBytes) : IBufferWriter<byte>
    {
        private readonly byte[] _buf = new byte[65536];
        private int _written;

        public void Advance(int count) => _written += count;

        public Memory<byte> GetMemory(int sizeHint = 0) =>
            _written >= failAfterBytes ? throw new IOException("simulated consumer failure") : _buf;

        public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
    }

    [QemuFact]
    public async Task Capture_30Checkpoints_ReportsTimings()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("bench");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        ArrayBufferWriter<byte> w = new(1 << 20);
        List<double> stopMs = [], captureMs = [], contMs = [];
        long allocated = 0;
        for (int i = 0; i < 33; i++)
        {
            await Task.Delay(20);
            w.ResetWrittenCount();
            long a0 = GC.GetTotalAllocatedBytes(precise: false);
            long t0 = Stopwatch.GetTimestamp();
            await q.StopAsync();
            long t1 = Stopwatch.GetTimestamp();
            await q.CaptureDeviceStateAsync(w, StateTimeout, CancellationToken.None);
            long t2 = Stopwatch.GetTimestamp();
            await q.ContAsync();
            long t3 = Stopwatch.GetTimestamp();
            long a1 = GC.GetTotalAllocatedBytes(precise: false);
            if (Stopwatch.GetElapsedTime(t0, t3).TotalMilliseconds > 50)
            {
                output.WriteLine($"slow iteration {i}: stop {Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds:F1} capture {Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds:F1} cont {Stopwatch.GetElapsedTime(t2, t3).TotalMilliseconds:F1} ms");
            }

            if (i >= 3)
            {
                stopMs.Add(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
                captureMs.Add(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
                contMs.Add(Stopwatch.GetElapsedTime(t2, t3).TotalMilliseconds);
                allocated += a1 - a0;
            }
        }

        static string Stats(List<double> v)
        {
            double[] s = [.. v.Order()];
            return $"min {s[0]:F2} median {s[s.Length / 2]:F2} p90 {s[(int)(s.Length * 0.9)]:F2} max {s[^1]:F2} ms";
        }

        output.WriteLine($"bytes per capture: {w.WrittenCount}");
        output.WriteLine($"stop:    {Stats(stopMs)}");
        output.WriteLine($"capture: {Stats(captureMs)}");
        output.WriteLine($"cont:    {Stats(contMs)}");
        output.WriteLine($"process-wide allocation per stop+capture+cont: ~{allocated / stopMs.Count / 1024} KiB (includes other threads)");
        Assert.Equal("running", await q.QueryStatusAsync());
    }

    [QemuFact]
    public async Task KillQemu_PendingExecute_FailsQuicklyWithDisconnected()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("victim");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);

        // Freeze QEMU so the command stays pending, then kill it.
        Assert.Equal(0, Native.Kill(q.Pid, Native.SIGSTOP));
        Task<string> pending = q.QueryStatusAsync();
        await Task.Delay(200);
        Assert.False(pending.IsCompleted);

        Stopwatch sw = Stopwatch.StartNew();
        q.Kill();
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => pending.WaitAsync(TimeSpan.FromSeconds(5)));
        output.WriteLine($"pending command failed {sw.Elapsed.TotalMilliseconds:F1} ms after SIGKILL");
        Assert.True(sw.ElapsedMilliseconds < 1000);
        await q.Qmp.Completion.WaitAsync(TimeSpan.FromSeconds(5));
        await q.Exited.WaitAsync(TimeSpan.FromSeconds(5));
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => q.StopAsync());
    }

    [QemuFact]
    public async Task Start_RamFileDirectoryMissing_ThrowsWithStderrTail()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("noram") with { RamFilePath = Path.Combine(scratch.Dir, "missing-dir", "x.ram") };
        await using NetSink net = new(spec.NetSocketPath);
        QemuStartException e = await Assert.ThrowsAsync<QemuStartException>(
            () => QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None));
        output.WriteLine(e.Message);
        Assert.Equal(1, e.ExitCode);
        Assert.Contains("missing-dir/x.ram", e.StderrTail, StringComparison.Ordinal);
    }

    [QemuFact]
    public async Task Start_NetSocketNotListening_Qemu72StillStarts()
    {
        // Characterisation of QEMU 7.2: a -netdev stream client that cannot connect is not an error;
        // the NIC simply stays unconnected (no reconnect). The proxy must listen before QEMU starts.
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("nonet");
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        Assert.Equal("running", await q.QueryStatusAsync());
        output.WriteLine($"stderr: '{q.StderrTail}'");
    }

    [QemuFact]
    public async Task Start_BinaryMissing_ThrowsQemuStartException()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("nobin") with { QemuBinary = "/nonexistent/qemu-system-x86_64" };
        await Assert.ThrowsAsync<QemuStartException>(() => QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None));
    }

    [QemuFact]
    public async Task Quit_ExitsCleanly()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("quitter");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        await q.QuitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(0, await q.Exited);
        await q.Qmp.Completion.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [QemuFact]
    public async Task LoadGarbage_FailsWithDeviceStateOrDisconnect()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("garbage", incoming: true);
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        byte[] junk = new byte[4096];
        Random.Shared.NextBytes(junk);
        Exception e = await Assert.ThrowsAnyAsync<Exception>(() => q.LoadDeviceStateAsync(junk, StateTimeout, CancellationToken.None));
        output.WriteLine($"{e.GetType().Name}: {e.Message}");
        Assert.True(e is DeviceStateException or QmpDisconnectedException, e.ToString());
    }

    [QemuFact]
    public async Task Load_NotIncomingDefer_ThrowsInvalidOperation()
    {
        using VmScratch scratch = new();
        VmSpec spec = scratch.Spec("plain");
        await using NetSink net = new(spec.NetSocketPath);
        await using QemuProcess q = await QemuProcess.StartAsync(spec, NullLogger.Instance, StartTimeout, CancellationToken.None);
        await Assert.ThrowsAsync<InvalidOperationException>(() => q.LoadDeviceStateAsync(new byte[1], StateTimeout, CancellationToken.None));
    }
}
