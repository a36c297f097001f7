using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Colo.Node.Primary;
using Colo.Proxy;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Node.Tests;

/// <summary>
/// Review of <see cref="PrimaryProxy"/>'s backpressure and its "PVM stopped for a checkpoint" mode, played the way
/// <see cref="CheckpointSender"/> drives it (stop → <see cref="PrimaryProxy.PvmStoppedForCheckpoint"/> → commit →
/// <see cref="PrimaryProxy.PvmResuming"/> → cont), against a fake PVM on a real unix socket. The output-commit rule under
/// test: nothing the PVM sends after it resumes reaches the client before the SVM produced it or a later checkpoint
/// covers it.
/// </summary>
public sealed class ReviewBackpressureTests : IDisposable
{
    private const int Bound = 64 * 1024;
    private const int PayloadLength = 1460;
    private const int FrameLength = 14 + 20 + 20 + PayloadLength;
    private const int FrameCount = 200;
    private const int PvmSendBuffer = 32 * 1024;
    private static readonly TimeSpan WaitTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(300);

    private readonly string _dir = Directory.CreateTempSubdirectory("colo-review-bp-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public async Task OutputAfterResume_IsHeldUntilTheSvmAgrees_NotReleasedByTheCommitBeforeIt()
    {
        await using var rig = await Rig.StartAsync(_dir);
        await rig.WriteAsync(0, 10);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 10, "the proxy to read the first epoch's output");

        // Checkpoint: the PVM stops; what it sent before the stop (10..14) is read and released by the commit.
        rig.Proxy.PvmStoppedForCheckpoint();
        await rig.WriteAsync(10, 15);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 15, "the proxy to read the output sent before the stop");
        rig.Commit();
        rig.Proxy.PvmResuming();
        Assert.Equal(rig.Sent.Take(15), rig.Client.Snapshot());

        // The PVM runs again: its new output waits for the SVM.
        await rig.WriteAsync(15, 20);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 20, "the proxy to read the output sent after the resume");
        await Task.Delay(100); // the 20 ms tick runs: a compare timeout (1 min here) must not release anything either
        Assert.Equal(15, rig.Client.Count);
        for (int i = 15; i < 18; i++)
            rig.Proxy.OnSvmFrame(rig.Sent[i]);
        Assert.Equal(rig.Sent.Take(18), rig.Client.Snapshot());
        Dictionary<string, long> c = rig.Proxy.Counters();
        Assert.Equal(2, c["HeldFrames"]);
        Assert.Equal(15, c["ReleasedOnCheckpoint"]);
        Assert.Equal(0, c["Mismatches"]);
    }

    [Fact]
    public async Task OutputReadAfterTheCommit_StaysHeld_UntilTheNextCommit()
    {
        // The commit releases only what the reader had passed to the engine. Output the stopped PVM had sent but the
        // reader had not yet read when the commit came (the reader lagging behind the checkpoint) is held into the next
        // epoch: safe (never released early), but the SVM, restored past it, never sends it again.
        await using var rig = await Rig.StartAsync(_dir);
        rig.Proxy.PvmStoppedForCheckpoint();
        rig.Commit();
        await rig.WriteAsync(0, 3);
        await WaitUntilAsync(() => rig.Pvm.FramesRead == 3, "the proxy to read the late output");
        rig.Proxy.PvmResuming();
        await Task.Delay(100);
        Assert.Equal(0, rig.Client.Count);
        rig.Commit();
        Assert.Equal(rig.Sent.Take(3), rig.Client.Snapshot());
    }

    [Fact]
    public async Task CheckpointFails_TheBoundAppliesAgain_UntilTheSecondaryIsDeclaredLost()
    {
        await using var rig = await Rig.StartAsync(_dir);
        Task writer = rig.WriteAsync(0, FrameCount);
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] == 1, "a backpressure episode");
        long stalledAt = await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");

        // The checkpoint stops the PVM: the socket's content is read past the bound.
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => writer.IsCompleted, "the fake PVM's last write");
        long written = rig.Written;
        Assert.True(written > stalledAt && written < FrameCount, $"written {written}, stalled at {stalledAt}");
        await WaitUntilAsync(() => rig.Pvm.FramesRead == written, "the proxy to read the stopped PVM's output");

        // The checkpoint fails (no commit); the PVM resumes and sends on. Over the bound, nothing more is read.
        rig.Proxy.PvmResuming();
        rig.ResumeWriter();
        writer = rig.WriteAsync((int)written, FrameCount);
        long read = rig.Pvm.FramesRead;
        await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block again");
        long readAfter = await WaitStableAsync(() => rig.Pvm.FramesRead, "the proxy to stop reading");
        // The read already waiting when the PVM resumed completes: one frame, as at any crossing of the bound.
        Assert.InRange(readAfter, read, read + 1);
        Assert.Equal(0, rig.Client.Count);
        Assert.Equal(2, rig.Proxy.Counters()["pvm_backpressure_episodes"]);

        // The primary then declares the secondary lost: everything flows, in order.
        rig.Proxy.Unprotect();
        await writer.WaitAsync(WaitTimeout);
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame released");
        Assert.Equal(rig.Sent, rig.Client.Snapshot());
    }

    [Fact]
    public async Task PvmDiesWhileStopped_NothingReleased_ThenUnprotectReleasesWhatWasReadInOrder()
    {
        await using var rig = await Rig.StartAsync(_dir);
        Task writer = rig.WriteAsync(0, FrameCount);
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] == 1, "a backpressure episode");
        await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => writer.IsCompleted, "the fake PVM's last write");
        long written = rig.Written;
        await WaitUntilAsync(() => rig.Pvm.FramesRead == written, "the proxy to read the stopped PVM's output");

        rig.PvmSocket.Shutdown(SocketShutdown.Both);
        rig.PvmSocket.Close();
        await rig.Proxy.PvmClosed.WaitAsync(WaitTimeout);
        Assert.Equal(0, rig.Client.Count);
        rig.Proxy.PvmResuming();
        rig.Proxy.Unprotect();
        Assert.Equal(rig.Sent.Take((int)written), rig.Client.Snapshot());
    }

    [Fact]
    public async Task SecondaryLostWhileStopped_EverythingReleased_NoFurtherBackpressure()
    {
        await using var rig = await Rig.StartAsync(_dir);
        Task writer = rig.WriteAsync(0, FrameCount);
        await WaitUntilAsync(() => rig.Proxy.Counters()["pvm_backpressure_episodes"] == 1, "a backpressure episode");
        await WaitStableAsync(() => rig.Written, "the fake PVM's writes to block");
        rig.PauseWriter();
        rig.Proxy.PvmStoppedForCheckpoint();
        await WaitUntilAsync(() => writer.IsCompleted, "the fake PVM's last write");
        rig.Proxy.Unprotect();
        rig.Proxy.PvmResuming();
        rig.ResumeWriter();
        await rig.WriteAsync((int)rig.Written, FrameCount).WaitAsync(WaitTimeout);
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "every frame released");
        Assert.Equal(rig.Sent, rig.Client.Snapshot());
        Assert.Equal(1, rig.Proxy.Counters()["pvm_backpressure_episodes"]);
    }

    [Fact]
    public async Task CommitArrivingAfterUnprotect_DoesNotReprotect_OutputKeepsFlowing()
    {
        // PrimaryNode: the secondary's Loaded completes the checkpoint's wait (its continuation runs on the thread pool)
        // and the receive loop goes straight on to a Goodbye sent just after it (e.g. the secondary's "checkpoint load
        // failed" when its cont fails) → SecondaryLost → Unprotect. If the checkpoint's commit runs after that, it must not
        // put the engine back in protected mode: no SVM output will ever come, the scheduler has stopped, and the PVM's
        // output would be held for good (and, over the bound, its socket no longer read at all).
        await using var rig = await Rig.StartAsync(_dir);
        rig.Proxy.PvmStoppedForCheckpoint();
        rig.Proxy.Unprotect();
        rig.Commit();
        rig.Proxy.PvmResuming();
        await rig.WriteAsync(0, FrameCount).WaitAsync(WaitTimeout);
        await WaitUntilAsync(() => rig.Client.Count == FrameCount, "the unprotected PVM's output to pass through");
        Assert.Equal(rig.Sent, rig.Client.Snapshot());
    }

    [Fact]
    public async Task BackpressureMs_NeverGoesBackwards_WhileEpisodesStartAndEnd()
    {
        // The status adds the episode under way to the ended ones; an episode ending between the two reads must not make
        // the figure drop (a monitor taking differences would see negative time) or jump.
        await using var rig = await Rig.StartAsync(_dir);
        rig.StartController(delay: TimeSpan.FromMilliseconds(2));
        var stop = new CancellationTokenSource();
        long drops = 0, samples = 0;
        var poller = Task.Run(() =>
        {
            long last = 0;
            while (!stop.IsCancellationRequested)
            {
                long ms = rig.Proxy.Counters()["pvm_backpressure_ms"];
                if (ms < last)
                    drops++;
                last = Math.Max(last, ms);
                samples++;
            }
        });
        for (int round = 0; round < 6; round++)
            await rig.WriteAsync(round * FrameCount, (round + 1) * FrameCount).WaitAsync(WaitTimeout * 2);
        await stop.CancelAsync();
        await poller;
        long episodes = rig.Proxy.Counters()["pvm_backpressure_episodes"];
        Assert.True(episodes >= 20, $"only {episodes} episodes");
        Assert.True(drops == 0, $"pvm_backpressure_ms went backwards {drops} times in {samples} samples over {episodes} episodes");
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
        return f;
    }

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

    /// <summary>A protected proxy (epoch 1 committed), the fake PVM's socket, and frames the test writes on demand.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly SemaphoreSlim _requests = new(0);
        private long _written;
        private long _epoch;
        private volatile bool _paused;
        private Task _controller = Task.CompletedTask;

        private Rig(NetdevStreamListener listener, Socket pvmSocket, NetdevStreamConnection pvm)
        {
            Listener = listener;
            PvmSocket = pvmSocket;
            Pvm = pvm;
            Proxy = new PrimaryProxy(
                new CompareOptions { MaxHeldBytes = Bound, MaxHeldBytesPerConnection = Bound, CompareTimeout = TimeSpan.FromMinutes(1) },
                Client, pvm, _ => _requests.Release(), NullLogger.Instance);
        }

        public NetdevStreamListener Listener { get; }
        public Socket PvmSocket { get; }
        public NetdevStreamConnection Pvm { get; }
        public RecordingClientPort Client { get; } = new();
        public PrimaryProxy Proxy { get; }
        public List<byte[]> Sent { get; } = [];
        public long Written => Interlocked.Read(ref _written);

        public static async Task<Rig> StartAsync(string dir)
        {
            var listener = new NetdevStreamListener(Path.Combine(dir, "pvm-net.sock"));
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { SendBufferSize = PvmSendBuffer };
            Task<NetdevStreamConnection> accept = listener.AcceptAsync(WaitTimeout, CancellationToken.None);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(listener.Path)).WaitAsync(WaitTimeout);
            var rig = new Rig(listener, socket, await accept);
            rig.Proxy.Start();
            rig.Commit();
            return rig;
        }

        public void Commit() => Proxy.CheckpointCommitted((ulong)Interlocked.Increment(ref _epoch));

        /// <summary>The guest stops transmitting: the frame being written completes, no further one starts.</summary>
        public void PauseWriter() => _paused = true;

        public void ResumeWriter() => _paused = false;

        /// <summary>Writes frames [<paramref name="from"/>, <paramref name="to"/>) with QEMU's framing, blocking when the socket is full.</summary>
        public Task WriteAsync(int from, int to)
        {
            lock (Sent)
            {
                for (int i = Sent.Count; i < to; i++)
                    Sent.Add(GuestTcpFrame(i));
            }
            return Task.Run(async () =>
            {
                for (int i = from; i < to && !_paused; i++)
                {
                    byte[] frame = Sent[i];
                    byte[] wire = new byte[4 + frame.Length];
                    BinaryPrimitives.WriteUInt32BigEndian(wire, (uint)frame.Length);
                    frame.CopyTo(wire, 4);
                    for (int off = 0; off < wire.Length;)
                        off += await PvmSocket.SendAsync(wire.AsMemory(off), SocketFlags.None, _stop.Token);
                    Interlocked.Increment(ref _written);
                }
            });
        }

        /// <summary>Answers every checkpoint request with a commit after <paramref name="delay"/>.</summary>
        public void StartController(TimeSpan delay) => _controller = Task.Run(async () =>
        {
            while (true)
            {
                await _requests.WaitAsync(_stop.Token);
                await Task.Delay(delay, _stop.Token);
                Commit();
            }
        });

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            Proxy.Dispose();
            PvmSocket.Dispose();
            foreach (Task t in new[] { _controller, Proxy.PvmClosed })
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
