using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Colo.Node.Primary;
using Colo.Proxy;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Colo.Node.Tests;

/// <summary>
/// <see cref="PrimaryProxy"/>'s backpressure on the PVM's <c>-netdev stream</c> socket, driven over a real unix socket by
/// a fake PVM QEMU that writes guest TCP output (4-byte big-endian length + frame) the secondary never answers. The
/// client side is an in-memory <see cref="IClientPort"/> recording every released frame.
/// </summary>
public sealed class PrimaryProxyBackpressureTests : IDisposable
{
    /// <summary>Global and per-connection held-bytes bound of the compare engine.</summary>
    private const int Bound = 64 * 1024;
    private const int PayloadLength = 1460;
    private const int FrameLength = 14 + 20 + 20 + PayloadLength;
    /// <summary>About 300 KB of output: several times the bound plus what the socket itself buffers.</summary>
    private const int FrameCount = 200;
    /// <summary>The fake PVM's SO_SNDBUF (the kernel doubles it): a unix stream socket buffers about this much unread.</summary>
    private const int PvmSendBuffer = 32 * 1024;
    private static readonly TimeSpan WaitTimeout = TimeSpan.FromSeconds(10);
    /// <summary>How long a value must stay unchanged to count as stalled.</summary>
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(300);

    private readonly string _dir = Directory.CreateTempSubdirectory("colo-bp-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public async Task HeldOutputOverTheBound_StopsReadingThePvm_UntilCheckpointCommits_ThenEveryFrameIsReleasedInOrder()
    {
        await using var rig = await Rig.StartAsync(_dir, protect: true);
        rig.StartWriter();

        Stall stall = await StallAsync(rig);

        // (3) The test now plays the checkpoint controller: every request is answered by a commit, which releases what is
        // held; the proxy resumes reading, fills up to the bound again, requests again, and so on.
        rig.StartController();
        await WaitUntilAsync(() => rig.WriterDone, "the fake PVM to write every frame");
        await WaitUntilAsync(() => rig.Pvm.FramesRead == FrameCount, "the proxy to read every frame");
        // The tail (below the bound) is released by the next checkpoint, as a periodic one would.
        rig.Commit();
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame to be released to the client side");

        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(FrameCount, c["ReleasedOnCheckpoint"]);
        Assert.Equal(0, c["HeldFrames"]);
        Assert.Equal(0, c["tap_write_failures"]);
        Assert.Equal(0, rig.Pvm.FramesTooLongForBuffer);
        // Each refill crosses the bound again: one episode per commit except the last (partial) fill.
        Assert.True(c["pvm_backpressure_episodes"] >= 2, $"episodes {c["pvm_backpressure_episodes"]}");
        Assert.True(c["pvm_backpressure_ms"] >= stall.ObservedMs, $"backpressure ms {c["pvm_backpressure_ms"]} < {stall.ObservedMs} observed stalled");
        Assert.True(c["QueueFullCheckpoints"] >= 2, $"queue-full requests {c["QueueFullCheckpoints"]}");
        Assert.True(c["PeakHeldBytes"] <= Bound + FrameLength, $"peak held {c["PeakHeldBytes"]} > bound {Bound} + one frame");
        Assert.All(rig.Reasons(), r => Assert.Equal(CheckpointReason.QueueFull, r));
    }

    [Fact]
    public async Task PvmStoppedForCheckpoint_OutputLeftInTheSocketIsReadPastTheBound_AndReleasedByThatCommit()
    {
        await using var rig = await Rig.StartAsync(_dir, protect: true);
        rig.StartWriter();
        await StallAsync(rig);

        // The checkpoint stops the PVM: the guest sends nothing more, but its socket still holds unread output.
        rig.StopWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => rig.WriterFinished, "the fake PVM's last write to complete once the proxy reads");
        long written = rig.Written;
        Assert.True(written < FrameCount, "the writer was meant to stop before its last frame");
        await WaitUntilAsync(() => rig.Pvm.FramesRead == written, "the proxy to read everything in the socket");
        Assert.True(rig.Proxy.Counters()["HeldBytes"] > Bound + FrameLength, "the stopped PVM's output was read past the bound");

        // The commit covers all of it: released now, nothing left for the next epoch, no further checkpoint request.
        rig.Commit();
        rig.Proxy.PvmResuming();
        Assert.Equal(rig.Sent.Take((int)written), rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(0, c["HeldFrames"]);
        Assert.Equal(written, c["ReleasedOnCheckpoint"]);
        Assert.Equal([CheckpointReason.QueueFull], rig.Reasons());
    }

    [Fact]
    public async Task SecondaryLostDuringBackpressure_PassThroughResumesReading_NothingDropped()
    {
        await using var rig = await Rig.StartAsync(_dir, protect: true);
        rig.StartWriter();

        Stall stall = await StallAsync(rig);

        // No checkpoint comes: the secondary is lost instead. Pass-through releases what is held and ends the episode.
        rig.Proxy.Unprotect();
        await WaitUntilAsync(() => rig.WriterDone, "the fake PVM to write every frame");
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame to be released to the client side");

        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(FrameCount, c["ReleasedPassThrough"]);
        Assert.Equal(1, c["pvm_backpressure_episodes"]);
        Assert.True(c["pvm_backpressure_ms"] >= stall.ObservedMs, $"backpressure ms {c["pvm_backpressure_ms"]} < {stall.ObservedMs} observed stalled");
        Assert.Equal([CheckpointReason.QueueFull], rig.Reasons());
    }

    [Fact]
    public async Task Unprotected_OutputPassesThrough_NoBackpressure()
    {
        await using var rig = await Rig.StartAsync(_dir, protect: false);
        rig.StartWriter();

        await WaitUntilAsync(() => rig.WriterDone, "the fake PVM to write every frame");
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame to be released to the client side");

        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(0, c["pvm_backpressure_episodes"]);
        Assert.Equal(0, c["pvm_backpressure_ms"]);
        Assert.Empty(rig.Reasons());
    }

    private readonly record struct Stall(long ObservedMs);

    /// <summary>
    /// Waits for the proxy to stop reading with the bound exceeded, checks (1) the QueueFull request, (2) that the
    /// proxy no longer reads the socket, which fills until the fake PVM's writes block, with at most one frame beyond
    /// the bound held, and (4) the episode counted; nothing is released meanwhile.
    /// </summary>
    private static async Task<Stall> StallAsync(Rig rig)
    {
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] >= 1, "a backpressure episode");
        var watch = Stopwatch.StartNew();

        // (1) The bound was exceeded and a QueueFull checkpoint requested (once).
        Assert.Equal([CheckpointReason.QueueFull], rig.Reasons());

        // (2) The fake PVM's writes block: the socket's send buffer fills because nobody reads it.
        await WaitUntilAsync(() => !rig.PvmSocket.Poll(TimeSpan.Zero, SelectMode.SelectWrite) || rig.WriterDone, "the fake PVM's socket to fill");
        Assert.False(rig.WriterDone, $"the fake PVM wrote all {FrameCount} frames without blocking");
        long written = await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");
        Assert.True(written < FrameCount, $"the fake PVM wrote all {FrameCount} frames without blocking");

        Dictionary<string, long> before = rig.Proxy.Counters();
        await Task.Delay(Quiet);
        Dictionary<string, long> c = rig.Proxy.Counters();
        long read = c["PvmFrames"];
        Assert.Equal(before["PvmFrames"], read);
        Assert.Equal(read, rig.Pvm.FramesRead);
        Assert.Equal(written, rig.Written);
        Assert.False(rig.PvmSocket.Poll(TimeSpan.FromMilliseconds(50), SelectMode.SelectWrite), "the fake PVM's socket became writable again");
        Assert.True(read < written, $"proxy read {read} of {written} frames written: nothing waits in the socket");
        Assert.True(read * FrameLength <= Bound + FrameLength, $"proxy read {read} frames ({read * FrameLength} bytes), bound {Bound}");
        // Held bytes count held frames plus the stream ring's capacity (which doubles as it grows); with these frame
        // sizes the frame that crosses the bound does not double the ring, so one frame is the whole overshoot.
        Assert.True(c["HeldBytes"] > Bound, $"held {c["HeldBytes"]} not over the bound {Bound}");
        Assert.True(c["HeldBytes"] <= Bound + FrameLength, $"held {c["HeldBytes"]} > bound {Bound} + one frame");
        Assert.True(c["PeakHeldBytes"] <= Bound + FrameLength, $"peak held {c["PeakHeldBytes"]} > bound {Bound} + one frame");
        // Nothing released (the SVM never answered) and nothing dropped: every frame read is held.
        Assert.Equal(0, rig.Client.Count);
        Assert.Equal(read, c["HeldFrames"]);

        // (4) The episode is counted while it lasts, and so is its time so far (the status shows a long stall).
        Assert.Equal(1, c["pvm_backpressure_episodes"]);
        long observed = watch.ElapsedMilliseconds;
        long shown = rig.Proxy.Counters()["pvm_backpressure_ms"];
        Assert.True(shown >= observed, $"backpressure ms {shown} < {observed} observed stalled, during the episode");
        return new Stall(observed);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var watch = Stopwatch.StartNew();
        while (!condition())
        {
            if (watch.Elapsed > WaitTimeout)
                Assert.Fail($"timed out after {WaitTimeout.TotalSeconds:F0} s waiting for {what}");
            await Task.Delay(5);
        }
    }

    /// <summary>Waits until <paramref name="value"/> stays unchanged for <see cref="Quiet"/>; returns it.</summary>
    private static async Task<long> WaitStableAsync(Func<long> value, string what)
    {
        var watch = Stopwatch.StartNew();
        long last = value();
        var since = Stopwatch.StartNew();
        while (since.Elapsed < Quiet)
        {
            if (watch.Elapsed > WaitTimeout)
                Assert.Fail($"timed out after {WaitTimeout.TotalSeconds:F0} s waiting for {what}");
            await Task.Delay(10);
            long now = value();
            if (now != last)
            {
                last = now;
                since.Restart();
            }
        }
        return last;
    }

    /// <summary>Guest 10.0.0.2:80 → client 10.0.0.1:40000, ACK|PSH, consecutive sequence numbers, numbered payload.</summary>
    private static byte[] GuestTcpFrame(int index)
    {
        var f = new byte[FrameLength];
        byte[] guestMac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56], clientMac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        clientMac.CopyTo(f, 0);
        guestMac.CopyTo(f, 6);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        Span<byte> ip = f.AsSpan(14, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], 20 + 20 + PayloadLength);
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)index);
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000);
        ip[8] = 64;
        ip[9] = 6;
        BinaryPrimitives.WriteUInt32BigEndian(ip[12..], 0x0A000002);
        BinaryPrimitives.WriteUInt32BigEndian(ip[16..], 0x0A000001);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip, 0));
        Span<byte> tcp = f.AsSpan(34);
        BinaryPrimitives.WriteUInt16BigEndian(tcp, 80);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[2..], 40000);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], 1000u + (uint)(index * PayloadLength));
        BinaryPrimitives.WriteUInt32BigEndian(tcp[8..], 5000);
        tcp[12] = 5 << 4;
        tcp[13] = 0x18; // ACK | PSH
        BinaryPrimitives.WriteUInt16BigEndian(tcp[14..], 65535);
        Span<byte> payload = tcp[20..];
        for (int i = 0; i < payload.Length; i++)
            payload[i] = (byte)(index * 31 + i);
        BinaryPrimitives.WriteInt32BigEndian(payload, index);
        uint pseudo = 0x0A00 + 0x0002 + 0x0A00 + 0x0001 + 6 + (uint)tcp.Length;
        BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], Checksum(tcp, pseudo));
        return f;
    }

    private static ushort Checksum(ReadOnlySpan<byte> data, uint sum)
    {
        for (int i = 0; i < data.Length; i += 2)
            sum += (uint)(data[i] << 8 | (i + 1 < data.Length ? data[i + 1] : 0));
        while (sum > 0xffff)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    /// <summary>The client side: records every released frame, supplies no client frames.</summary>
    private sealed class RecordingClientPort : IClientPort
    {
        private readonly List<byte[]> _frames = [];

        public int Count
        {
            get
            {
                lock (_frames)
                    return _frames.Count;
            }
        }

        public List<byte[]> Snapshot()
        {
            lock (_frames)
                return [.. _frames];
        }

        public void Write(ReadOnlySpan<byte> frame)
        {
            lock (_frames)
                _frames.Add(frame.ToArray());
        }

        public Thread? Start(CancellationToken stop, ILogger log, TapFrameHandler onFrame) => null;

        public void Dispose()
        {
        }
    }

    /// <summary>A started proxy, the fake PVM connected to its netdev listener, and the test's checkpoint controller.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<CheckpointReason> _reasons = [];
        private readonly SemaphoreSlim _requests = new(0);
        private long _written;
        private volatile bool _paused;
        private long _epoch;
        private Task _writer = Task.CompletedTask;
        private Task _controller = Task.CompletedTask;

        private Rig(NetdevStreamListener listener, Socket pvmSocket, NetdevStreamConnection pvm)
        {
            Listener = listener;
            PvmSocket = pvmSocket;
            Pvm = pvm;
            Proxy = new PrimaryProxy(
                new CompareOptions { MaxHeldBytes = Bound, MaxHeldBytesPerConnection = Bound, CompareTimeout = TimeSpan.FromMinutes(1) },
                Client, pvm, OnCheckpointRequest, NullLogger.Instance);
            for (int i = 0; i < FrameCount; i++)
                Sent.Add(GuestTcpFrame(i));
        }

        public NetdevStreamListener Listener { get; }
        /// <summary>The fake PVM QEMU's end of the <c>-netdev stream</c> socket.</summary>
        public Socket PvmSocket { get; }
        /// <summary>The proxy's end.</summary>
        public NetdevStreamConnection Pvm { get; }
        public RecordingClientPort Client { get; } = new();
        public PrimaryProxy Proxy { get; }
        /// <summary>Frames the fake PVM writes, in order.</summary>
        public List<byte[]> Sent { get; } = [];
        /// <summary>Frames the fake PVM's socket accepted completely.</summary>
        public long Written => Interlocked.Read(ref _written);
        public bool WriterDone => _writer.IsCompletedSuccessfully && Written == FrameCount;

        public static async Task<Rig> StartAsync(string dir, bool protect)
        {
            var listener = new NetdevStreamListener(Path.Combine(dir, "pvm-net.sock"));
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { SendBufferSize = PvmSendBuffer };
            Task<NetdevStreamConnection> accept = listener.AcceptAsync(WaitTimeout, CancellationToken.None);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(listener.Path)).WaitAsync(WaitTimeout);
            var rig = new Rig(listener, socket, await accept);
            rig.Proxy.Start();
            if (protect)
                rig.Commit(); // the initial sync's checkpoint: protected from here on
            return rig;
        }

        public List<CheckpointReason> Reasons()
        {
            lock (_reasons)
                return [.. _reasons];
        }

        /// <summary>A checkpoint committed on the secondary (epoch + 1).</summary>
        public void Commit() => Proxy.CheckpointCommitted((ulong)Interlocked.Increment(ref _epoch));

        public void StartWriter() => _writer = Task.Run(WriteAllAsync);

        /// <summary>The guest stops transmitting (as a stopped VM): the frame being written completes, no further one starts.</summary>
        public void StopWriter() => _paused = true;

        /// <summary>True once the writer has returned (after <see cref="StopWriter"/> or all frames).</summary>
        public bool WriterFinished => _writer.IsCompleted;

        /// <summary>Answers every checkpoint request (raised under the proxy's lock) with a commit, from another task.</summary>
        public void StartController() => _controller = Task.Run(async () =>
        {
            while (true)
            {
                await _requests.WaitAsync(_stop.Token);
                Commit();
            }
        });

        private void OnCheckpointRequest(CheckpointReason reason)
        {
            lock (_reasons)
                _reasons.Add(reason);
            _requests.Release();
        }

        /// <summary>The guest transmitting: QEMU's framing (4-byte big-endian length + frame), blocking when the socket is full.</summary>
        private async Task WriteAllAsync()
        {
            foreach (byte[] frame in Sent)
            {
                if (_paused)
                    return;
                byte[] wire = new byte[4 + frame.Length];
                BinaryPrimitives.WriteUInt32BigEndian(wire, (uint)frame.Length);
                frame.CopyTo(wire, 4);
                for (int off = 0; off < wire.Length;)
                    off += await PvmSocket.SendAsync(wire.AsMemory(off), SocketFlags.None, _stop.Token);
                Interlocked.Increment(ref _written);
            }
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            Proxy.Dispose();
            PvmSocket.Dispose();
            foreach (Task t in new[] { _writer, _controller, Proxy.PvmClosed })
            {
                try
                {
                    await t.WaitAsync(WaitTimeout);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                }
            }
            Listener.Dispose();
            _stop.Dispose();
            _requests.Dispose();
        }
    }
}
