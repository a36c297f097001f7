using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Colo.Node.Primary;
using Colo.Proxy;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Node.Tests.Support;

/// <summary>
/// A started <see cref="PrimaryProxy"/>, a fake PVM QEMU connected to its <c>-netdev stream</c> listener over a real unix
/// socket (writing guest TCP output with QEMU's framing: 4-byte big-endian length + frame, which the secondary never
/// answers), an in-memory client side recording every released frame, and the test playing the checkpoint controller.
/// Also holds the constants and wait helpers the backpressure tests share.
/// </summary>
internal sealed class PrimaryProxyRig : IAsyncDisposable
{
    /// <summary>Global and per-connection held-bytes bound of the compare engine.</summary>
    public const int Bound = 64 * 1024;

    /// <summary>TCP payload bytes of every guest frame.</summary>
    public const int PayloadLength = 1460;

    /// <summary>Length of every guest frame: Ethernet, IPv4 and TCP headers and <see cref="PayloadLength"/>.</summary>
    public const int FrameLength = 14 + 20 + 20 + PayloadLength;

    /// <summary>About 300 KB of output: several times the bound plus what the socket itself buffers.</summary>
    public const int FrameCount = 200;

    /// <summary>The fake PVM's SO_SNDBUF (the kernel doubles it): a unix stream socket buffers about this much unread.</summary>
    public const int PvmSendBuffer = 32 * 1024;

    /// <summary>How long any wait may take before the test fails.</summary>
    public static readonly TimeSpan WaitTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long a value must stay unchanged to count as stalled.</summary>
    public static readonly TimeSpan Quiet = TimeSpan.FromMilliseconds(300);

    private readonly CancellationTokenSource _stop = new();
    private readonly List<CheckpointReason> _reasons = [];
    private readonly SemaphoreSlim _requests = new(0);
    private readonly bool _checksums;
    private long _written;
    private long _epoch;
    private volatile bool _paused;
    private Task _writer = Task.CompletedTask;
    private Task _controller = Task.CompletedTask;

    private PrimaryProxyRig(NetdevStreamListener listener, Socket pvmSocket, NetdevStreamConnection pvm, bool checksums)
    {
        Listener = listener;
        PvmSocket = pvmSocket;
        Pvm = pvm;
        _checksums = checksums;
        Proxy = new PrimaryProxy(
            new CompareOptions { MaxHeldBytes = Bound, MaxHeldBytesPerConnection = Bound, CompareTimeout = TimeSpan.FromMinutes(1) },
            Client, pvm, OnCheckpointRequest, NullLogger.Instance);
    }

    /// <summary>The proxy's <c>-netdev stream</c> listener.</summary>
    public NetdevStreamListener Listener { get; }

    /// <summary>The fake PVM QEMU's end of the <c>-netdev stream</c> socket.</summary>
    public Socket PvmSocket { get; }

    /// <summary>The proxy's end.</summary>
    public NetdevStreamConnection Pvm { get; }

    /// <summary>The client side: every frame the proxy released.</summary>
    public RecordingClientPort Client { get; } = new();

    /// <summary>The proxy under test.</summary>
    public PrimaryProxy Proxy { get; }

    /// <summary>Frames the fake PVM writes, in order (frame <c>i</c> is <see cref="GuestTcpFrame"/>(<c>i</c>)).</summary>
    public List<byte[]> Sent { get; } = [];

    /// <summary>Frames the fake PVM's socket accepted completely.</summary>
    public long Written => Interlocked.Read(ref _written);

    /// <summary>True once the writer of <see cref="StartWriter"/> has written all <see cref="FrameCount"/> frames.</summary>
    public bool WriterDone => _writer.IsCompletedSuccessfully && Written == FrameCount;

    /// <summary>True once the writer of <see cref="StartWriter"/> has returned (after <see cref="PauseWriter"/> or all frames).</summary>
    public bool WriterFinished => _writer.IsCompleted;

    /// <summary>Creates the listener, connects the fake PVM to it and starts the proxy.</summary>
    /// <param name="dir">Directory for the listener's socket.</param>
    /// <param name="protect">Commit the initial sync's checkpoint (epoch 1), so the proxy is protected from the start.</param>
    /// <param name="checksums">Whether the guest frames carry valid IPv4 header and TCP checksums (else both are zero).</param>
    /// <returns>The started rig.</returns>
    public static async Task<PrimaryProxyRig> StartAsync(string dir, bool protect = true, bool checksums = true)
    {
        var listener = new NetdevStreamListener(Path.Combine(dir, "pvm-net.sock"));
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { SendBufferSize = PvmSendBuffer };
        Task<NetdevStreamConnection> accept = listener.AcceptAsync(WaitTimeout, CancellationToken.None);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(listener.Path)).WaitAsync(WaitTimeout);
        var rig = new PrimaryProxyRig(listener, socket, await accept, checksums);
        rig.Proxy.Start();
        if (protect)
            rig.Commit(); // the initial sync's checkpoint: protected from here on
        return rig;
    }

    /// <summary>The checkpoint requests the proxy raised so far, in order.</summary>
    /// <returns>A copy of the reasons.</returns>
    public List<CheckpointReason> Reasons()
    {
        lock (_reasons)
            return [.. _reasons];
    }

    /// <summary>A checkpoint committed on the secondary (epoch + 1).</summary>
    public void Commit() => Proxy.CheckpointCommitted((ulong)Interlocked.Increment(ref _epoch));

    /// <summary>Starts writing all <see cref="FrameCount"/> frames in the background (see <see cref="WriterDone"/>).</summary>
    public void StartWriter() => _writer = WriteAsync(0, FrameCount);

    /// <summary>The guest stops transmitting (as a stopped VM): the frame being written completes, no further one starts.</summary>
    public void PauseWriter() => _paused = true;

    /// <summary>The guest may transmit again.</summary>
    public void ResumeWriter() => _paused = false;

    /// <summary>
    /// The guest transmitting: writes frames [<paramref name="from"/>, <paramref name="to"/>) with QEMU's framing (4-byte
    /// big-endian length + frame), blocking when the socket is full.
    /// </summary>
    /// <param name="from">First frame index.</param>
    /// <param name="to">Frame index past the last.</param>
    /// <returns>The writer; it stops early after <see cref="PauseWriter"/>.</returns>
    public Task WriteAsync(int from, int to)
    {
        lock (Sent)
        {
            for (int i = Sent.Count; i < to; i++)
                Sent.Add(GuestTcpFrame(i, _checksums));
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

    /// <summary>
    /// Answers every checkpoint request (raised under the proxy's lock) with a commit, from another task, after
    /// <paramref name="delay"/>.
    /// </summary>
    /// <param name="delay">Time between a request and its commit; zero commits at once.</param>
    public void StartController(TimeSpan delay = default) => _controller = Task.Run(async () =>
    {
        while (true)
        {
            await _requests.WaitAsync(_stop.Token);
            if (delay > TimeSpan.Zero)
                await Task.Delay(delay, _stop.Token);
            Commit();
        }
    });

    /// <summary>Fails the test unless <paramref name="condition"/> becomes true within <see cref="WaitTimeout"/>.</summary>
    /// <param name="condition">Polled every 5 ms.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <returns>A task completing once the condition held.</returns>
    public static async Task WaitUntilAsync(Func<bool> condition, string what)
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
    /// <param name="value">Polled every 10 ms.</param>
    /// <param name="what">What is awaited, for the failure message.</param>
    /// <returns>The stable value.</returns>
    public static async Task<long> WaitStableAsync(Func<long> value, string what)
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
    /// <param name="index">The frame's number (IPv4 id, sequence number, payload).</param>
    /// <param name="checksums">Whether to fill in the IPv4 header and TCP checksums (else both stay zero).</param>
    /// <returns>A <see cref="FrameLength"/>-byte frame.</returns>
    public static byte[] GuestTcpFrame(int index, bool checksums)
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
        if (checksums)
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
        if (checksums)
        {
            uint pseudo = 0x0A00 + 0x0002 + 0x0A00 + 0x0001 + 6 + (uint)tcp.Length;
            BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], Checksum(tcp, pseudo));
        }
        return f;
    }

    /// <summary>Stops the writers and the controller, closes the proxy, the fake PVM's socket and the listener.</summary>
    /// <returns>A task completing once everything has stopped.</returns>
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

    private static ushort Checksum(ReadOnlySpan<byte> data, uint sum)
    {
        for (int i = 0; i < data.Length; i += 2)
            sum += (uint)(data[i] << 8 | (i + 1 < data.Length ? data[i + 1] : 0));
        while (sum > 0xffff)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    private void OnCheckpointRequest(CheckpointReason reason)
    {
        lock (_reasons)
            _reasons.Add(reason);
        _requests.Release();
    }
}

/// <summary>The client side of a <see cref="PrimaryProxyRig"/>: records every released frame, supplies no client frames.</summary>
internal sealed class RecordingClientPort : IClientPort
{
    private readonly List<byte[]> _frames = [];

    /// <summary>Frames released so far.</summary>
    public int Count
    {
        get
        {
            lock (_frames)
                return _frames.Count;
        }
    }

    /// <summary>A copy of the frames released so far, in order.</summary>
    /// <returns>The frames.</returns>
    public List<byte[]> Snapshot()
    {
        lock (_frames)
            return [.. _frames];
    }

    /// <inheritdoc />
    public void Write(ReadOnlySpan<byte> frame)
    {
        lock (_frames)
            _frames.Add(frame.ToArray());
    }

    /// <inheritdoc />
    public Thread? Start(CancellationToken stop, ILogger log, TapFrameHandler onFrame) => null;

    /// <inheritdoc />
    public void Dispose()
    {
    }
}
