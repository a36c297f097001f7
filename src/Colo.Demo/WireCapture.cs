using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Demo;

/// <summary>Settings of a <see cref="WireCapture"/>.</summary>
public sealed class WireCaptureOptions
{
    /// <summary>The client's LAN interface, which carries the client's IPv4 address (the demo: <c>br0</c> of the LAN namespace). Required.</summary>
    public required string InterfaceName { get; init; }

    /// <summary>The guest's IPv4 address. Required.</summary>
    public required IPAddress GuestIp { get; init; }

    /// <summary>The guest's MAC, e.g. <c>52:54:00:c0:10:01</c>. Required.</summary>
    public required string GuestMac { get; init; }

    /// <summary>Time between two echo requests. Default 250 ms.</summary>
    public TimeSpan PingInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>An ARP request goes out before every <c>ArpEvery</c>-th echo request (the first included). Default 4.</summary>
    public int ArpEvery { get; init; } = 4;

    /// <summary>How long <see cref="WireCapture.StopAsync"/> waits for the replies to the last requests. Default 1 s.</summary>
    public TimeSpan ReplyTimeout { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Receive buffer of the capture socket. Default 8 MiB.</summary>
    public int ReceiveBufferBytes { get; init; } = 8 << 20;

    /// <summary>Most other (untracked) connections followed at once. Default 4096.</summary>
    public int MaxConnections { get; init; } = 4096;

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">A value is missing or out of range.</exception>
    public void Validate()
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(InterfaceName);
        ArgumentNullException.ThrowIfNull(GuestIp);
        if (GuestIp.AddressFamily != AddressFamily.InterNetwork)
            throw new ArgumentException("GuestIp must be IPv4", nameof(GuestIp));
        try
        {
            _ = WireFrame.ParseMac(GuestMac);
        }
        catch (FormatException e)
        {
            throw new ArgumentException(e.Message, nameof(GuestMac), e);
        }
        if (PingInterval <= TimeSpan.Zero) throw new ArgumentException("PingInterval must be positive", nameof(PingInterval));
        if (ArpEvery < 1) throw new ArgumentException("ArpEvery must be at least 1", nameof(ArpEvery));
        if (ReplyTimeout < TimeSpan.Zero) throw new ArgumentException("ReplyTimeout must not be negative", nameof(ReplyTimeout));
        if (ReceiveBufferBytes < 65536) throw new ArgumentException("ReceiveBufferBytes must be at least 64 KiB", nameof(ReceiveBufferBytes));
        if (MaxConnections < 1) throw new ArgumentException("MaxConnections must be positive", nameof(MaxConnections));
    }
}

/// <summary>
/// The client's wire probe (issue 4's required test cases, checked on the real wire): an <c>AF_PACKET</c> capture on
/// the client's LAN interface that follows the long-lived connection registered with <see cref="Track"/> through a
/// <see cref="WireCheck"/> (and every other client↔guest TCP connection, for information), and an ICMP echo + ARP
/// probe (<see cref="IcmpArpProbe"/>): an echo request from the client's IP stack every
/// <see cref="WireCaptureOptions.PingInterval"/>, and a broadcast ARP request for the guest's address before every
/// <see cref="WireCaptureOptions.ArpEvery"/>-th of them. The capture runs on its own thread (waits of 100 ms) until
/// <see cref="StopAsync"/>. Memory is bounded: only counters and the first few records of each kind are kept, never frames.
/// </summary>
public sealed class WireCapture : IAsyncDisposable
{
    private const int CaptureBytes = 512;
    private const int PollMs = 100;
    private const int SendTimeoutMs = 1000;

    private readonly WireCaptureOptions _o;
    private readonly ILogger _logger;
    private readonly PacketSocket _packet;
    private readonly Socket _icmp;
    private readonly IcmpArpProbe _probe;
    private readonly uint _clientIp, _guestIp;
    private readonly Lock _gate = new();
    private readonly List<Tracked> _allTracked = [];
    private readonly Dictionary<int, WireCheck> _others = [];
    private readonly WireOtherTcpResult _otherTotals = new();
    private readonly CancellationTokenSource _stopSending = new();
    private readonly Thread _thread;
    private Task _sender = Task.CompletedTask;
    private Tracked? _tracked;
    private volatile bool _stopCapture;
    private long _badFrames;
    private string? _captureError;
    private Task<WireProbeResult>? _stopped;

    private WireCapture(WireCaptureOptions o, ILogger logger, PacketSocket packet, Socket icmp, IcmpArpProbe probe, IPAddress clientIp)
    {
        _o = o;
        _logger = logger;
        _packet = packet;
        _icmp = icmp;
        _probe = probe;
        ClientIp = clientIp;
        _clientIp = probe.ClientIp;
        _guestIp = probe.GuestIp;
        _thread = new Thread(CaptureLoop) { IsBackground = true, Name = "wire-capture" };
    }

    /// <summary>The client's IPv4 address on the captured interface.</summary>
    public IPAddress ClientIp { get; }

    /// <summary>Opens the capture and the ICMP socket, and starts capturing and probing.</summary>
    /// <param name="options">What to capture and probe; validated first.</param>
    /// <param name="logger">Receives start, errors and the stop summary; null for none.</param>
    /// <returns>The running capture; stop it with <see cref="StopAsync"/>.</returns>
    /// <exception cref="ArgumentException">Invalid options.</exception>
    /// <exception cref="IOException">The interface is missing, has no IPv4 address, or a socket cannot be opened (needs CAP_NET_RAW).</exception>
    /// <exception cref="SocketException">The raw ICMP socket cannot be opened.</exception>
    public static WireCapture Start(WireCaptureOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        logger ??= NullLogger.Instance;
        NetworkInterface nic = NetworkInterface.GetAllNetworkInterfaces().FirstOrDefault(n => n.Name == options.InterfaceName)
            ?? throw new IOException($"interface '{options.InterfaceName}' not found");
        IPInterfaceProperties props = nic.GetIPProperties();
        IPAddress clientIp = props.UnicastAddresses.Select(u => u.Address).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
            ?? throw new IOException($"interface '{options.InterfaceName}' has no IPv4 address");
        int ifIndex;
        try
        {
            ifIndex = props.GetIPv4Properties().Index;
        }
        catch (NetworkInformationException e)
        {
            throw new IOException($"interface '{options.InterfaceName}': no index ({e.Message})", e);
        }
        byte[] macBytes = nic.GetPhysicalAddress().GetAddressBytes();
        if (macBytes.Length != 6)
            throw new IOException($"interface '{options.InterfaceName}' has no Ethernet address");

        var probe = new IcmpArpProbe(
            echoId: (ushort)Random.Shared.Next(1, 65536),
            nonce: (ulong)Random.Shared.NextInt64(),
            clientIp: BinaryPrimitives.ReadUInt32BigEndian(clientIp.GetAddressBytes()),
            clientMac: WireFrame.ReadMac(macBytes),
            guestIp: BinaryPrimitives.ReadUInt32BigEndian(options.GuestIp.GetAddressBytes()),
            guestMac: WireFrame.ParseMac(options.GuestMac));
        PacketSocket packet = PacketSocket.Open(ifIndex, options.ReceiveBufferBytes);
        Socket icmp;
        try
        {
            icmp = new Socket(AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Icmp) { SendTimeout = SendTimeoutMs, ReceiveBufferSize = 4096 };
        }
        catch
        {
            packet.Dispose();
            throw;
        }
        var capture = new WireCapture(options, logger, packet, icmp, probe, clientIp);
        capture._thread.Start();
        capture._sender = Task.Run(() => capture.SendLoopAsync(capture._stopSending.Token), CancellationToken.None);
        logger.LogInformation("wire probe on {Interface} (client {Client}, ifindex {Index}): echo id {Id} every {Interval} ms, ARP every {Arp} pings",
            options.InterfaceName, clientIp, ifIndex, probe.EchoId, options.PingInterval.TotalMilliseconds, options.ArpEvery);
        return capture;
    }

    /// <summary>
    /// Follows the connection <paramref name="local"/> → <paramref name="remote"/> with a fresh <see cref="WireCheck"/>
    /// from now on (call it after binding the client socket and before connecting, so the handshake is seen). A later
    /// call (a reconnect) starts another check; the result sums them.
    /// </summary>
    /// <param name="local">The client socket's bound address and port.</param>
    /// <param name="remote">The guest's address and port.</param>
    public void Track(IPEndPoint local, IPEndPoint remote)
    {
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(remote);
        var t = new Tracked((ushort)local.Port, (ushort)remote.Port, new WireCheck(), $"{ClientIp}:{local.Port} -> {remote}");
        lock (_gate)
            _allTracked.Add(t);
        Volatile.Write(ref _tracked, t);
    }

    /// <summary>
    /// Stops probing, waits up to <see cref="WireCaptureOptions.ReplyTimeout"/> for the replies to the last requests
    /// (at least 300 ms, so a closing handshake is seen too), stops the capture and closes the sockets. Idempotent.
    /// </summary>
    /// <returns>What was seen.</returns>
    public Task<WireProbeResult> StopAsync()
    {
        lock (_gate)
            return _stopped ??= StopCoreAsync();
    }

    /// <summary>Stops (see <see cref="StopAsync"/>) and discards the result.</summary>
    /// <returns>A task completing when the sockets are closed.</returns>
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    private async Task<WireProbeResult> StopCoreAsync()
    {
        await _stopSending.CancelAsync().ConfigureAwait(false);
        await _sender.ConfigureAwait(false);
        long stoppedMs = UnixMs();
        var linger = Stopwatch.StartNew();
        var minLinger = TimeSpan.FromMilliseconds(300);
        while (linger.Elapsed < _o.ReplyTimeout &&
               (linger.Elapsed < minLinger || _probe.UnansweredSince(stoppedMs - (long)_o.ReplyTimeout.TotalMilliseconds) > 0))
            await Task.Delay(50).ConfigureAwait(false);
        if (linger.Elapsed < minLinger)
            await Task.Delay(minLinger - linger.Elapsed).ConfigureAwait(false);

        _stopCapture = true;
        if (!_thread.Join(TimeSpan.FromSeconds(5)))
            _captureError ??= "capture thread did not stop within 5 s";
        (long packets, long drops) = _packet.ReadStatistics();
        _packet.Dispose();
        _icmp.Dispose();
        _stopSending.Dispose();

        var result = new WireProbeResult
        {
            Interface = _o.InterfaceName,
            Error = _captureError,
            CapturePackets = packets,
            CaptureDrops = drops,
            BadFrames = _badFrames,
            Tcp = TrackedResult(),
            OtherTcp = OtherResult(),
            Icmp = _probe.IcmpResult(),
            Arp = _probe.ArpResult(),
        };
        _logger.LogInformation(
            "wire probe done: INCR connection {Segments} guest segments, {Retrans} retransmissions, {Gaps} seq gaps, {ClientRsts} client RSTs, {AckBeyond} acks beyond sent; " +
            "icmp {Sent} sent, {Answered} answered; arp {Requests} requests, {Replies} replies; capture {Packets} frames, {Drops} dropped{Error}",
            result.Tcp.Guest.Segments, result.Tcp.Guest.Retransmissions, result.Tcp.Guest.SeqGaps, result.Tcp.Client.Rsts, result.Tcp.Client.AckBeyondSent,
            result.Icmp.Sent, result.Icmp.Pings.Count(p => p.ReplyMs != null), result.Arp.ProbesSent + result.Arp.KernelRequests, result.Arp.Replies,
            packets, drops, _captureError is null ? "" : "; error: " + _captureError);
        return result;
    }

    private async Task SendLoopAsync(CancellationToken ct)
    {
        byte[] icmp = new byte[IcmpArpProbe.EchoMessageLength];
        byte[] arp = new byte[IcmpArpProbe.ArpFrameLength];
        var target = new IPEndPoint(_o.GuestIp, 0);
        bool icmpErrorLogged = false, arpErrorLogged = false;
        for (long i = 0; !ct.IsCancellationRequested; i++)
        {
            if (i % _o.ArpEvery == 0)
            {
                _probe.BuildArpRequest(arp);
                bool sent = true;
                try
                {
                    _packet.Send(arp, 0x0806, SendTimeoutMs);
                }
                catch (IOException e)
                {
                    sent = false;
                    if (!arpErrorLogged)
                        _logger.LogWarning("wire probe: ARP request not sent: {Error}", e.Message);
                    arpErrorLogged = true;
                }
                _probe.ArpRequestSent(UnixMs(), sent);
            }
            if (_probe.TryNextEchoRequest(icmp, UnixMs(), out ushort seq))
            {
                try
                {
                    _icmp.SendTo(icmp, 0, icmp.Length, SocketFlags.None, target);
                }
                catch (SocketException e)
                {
                    _probe.EchoSendFailed(seq);
                    if (!icmpErrorLogged)
                        _logger.LogWarning("wire probe: echo request {Seq} not sent: {Error}", seq, e.SocketErrorCode);
                    icmpErrorLogged = true;
                }
            }
            if (!await Pause.TryDelayAsync(_o.PingInterval, ct).ConfigureAwait(false))
                break;
        }
    }

    private void CaptureLoop()
    {
        byte[] buffer = new byte[CaptureBytes];
        try
        {
            while (!_stopCapture)
                Handle(buffer, _packet.Receive(buffer, PollMs, out _));
            // Whatever the kernel queued before the stop (bounded: the socket buffer).
            for (int n; (n = _packet.Receive(buffer, 0, out _)) > 0;)
                Handle(buffer, n);
        }
        catch (IOException e)
        {
            _captureError = e.Message;
            _logger.LogWarning("wire capture stopped: {Error}", e.Message);
        }
    }

    private void Handle(byte[] buffer, int length)
    {
        if (length == 0)
            return;
        long now = UnixMs();
        ReadOnlySpan<byte> frame = buffer.AsSpan(0, length);
        if (!WireFrame.TryParse(frame, out WireFrame f))
        {
            _badFrames++;
            return;
        }
        if (f.Kind == WireFrameKind.Tcp)
            OnTcp(f, now);
        else if (f.Kind != WireFrameKind.Other)
            _probe.OnFrame(f, frame, now);
    }

    private void OnTcp(in WireFrame f, long now)
    {
        bool fromGuest = f.SrcIp == _guestIp && f.DstIp == _clientIp;
        bool fromClient = f.SrcIp == _clientIp && f.DstIp == _guestIp;
        if (!fromGuest && !fromClient)
            return;
        ushort clientPort = fromGuest ? f.DstPort : f.SrcPort, guestPort = fromGuest ? f.SrcPort : f.DstPort;
        Tracked? t = Volatile.Read(ref _tracked);
        WireCheck? check = t is not null && t.ClientPort == clientPort && t.GuestPort == guestPort
            ? t.Check
            : OtherCheck(clientPort, guestPort, f, fromClient);
        if (check is null)
            return;
        if (fromGuest)
            check.OnGuestSegment(f.Seq, f.Ack, f.Flags, f.PayloadLength, now);
        else
            check.OnClientSegment(f.Seq, f.Ack, f.Flags, f.PayloadLength, now);
    }

    private WireCheck? OtherCheck(ushort clientPort, ushort guestPort, in WireFrame f, bool fromClient)
    {
        int key = clientPort << 16 | guestPort;
        bool clientSyn = fromClient && (f.Flags & (TcpSegmentFlags.Syn | TcpSegmentFlags.Ack)) == TcpSegmentFlags.Syn;
        if (_others.TryGetValue(key, out WireCheck? check))
        {
            if (!clientSyn || check.ClientIsn == f.Seq)
                return check;
            Fold(check); // the port was reused by a new connection
            _others.Remove(key);
        }
        if (_others.Count >= _o.MaxConnections)
        {
            _otherTotals.UntrackedSegments++;
            return null;
        }
        check = new WireCheck(maxAnomalies: 4);
        _others[key] = check;
        _otherTotals.Connections++;
        if (!clientSyn)
            _otherTotals.MidStream++;
        return check;
    }

    private void Fold(WireCheck check)
    {
        _otherTotals.Guest.Add(check.Guest);
        _otherTotals.Client.Add(check.Client);
        foreach (WireAnomaly a in check.Anomalies)
        {
            if (_otherTotals.Anomalies.Count < WireCheck.DefaultMaxAnomalies)
                _otherTotals.Anomalies.Add(a);
        }
    }

    private WireOtherTcpResult OtherResult()
    {
        foreach (WireCheck check in _others.Values)
            Fold(check);
        _others.Clear();
        return _otherTotals;
    }

    private WireTcpResult TrackedResult()
    {
        var r = new WireTcpResult();
        List<Tracked> all;
        lock (_gate)
            all = [.. _allTracked];
        r.Connections = all.Count;
        r.HandshakeSeen = all.Count > 0 && all.All(t => t.Check.HandshakeSeen);
        foreach (Tracked t in all)
        {
            r.Connection = t.Description;
            r.Guest.Add(t.Check.Guest);
            r.Client.Add(t.Check.Client);
            r.Anomalies.AddRange(t.Check.Anomalies.Take(WireCheck.DefaultMaxAnomalies - r.Anomalies.Count));
            r.Gaps.AddRange(t.Check.Gaps.Take(WireCheck.MaxGaps - r.Gaps.Count));
            foreach (WireSecond s in t.Check.GuestSegmentsPerSecond)
            {
                if (r.GuestSegmentsPerSecond.Count > 0 && r.GuestSegmentsPerSecond[^1].AtS == s.AtS)
                    r.GuestSegmentsPerSecond[^1].Segments += s.Segments;
                else
                    r.GuestSegmentsPerSecond.Add(new WireSecond { AtS = s.AtS, Segments = s.Segments });
            }
        }
        return r;
    }

    private static long UnixMs() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private sealed record Tracked(ushort ClientPort, ushort GuestPort, WireCheck Check, string Description);

    /// <summary>For logs: the probe's settings.</summary>
    /// <returns>A one-line description.</returns>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"wire probe on {_o.InterfaceName}, client {ClientIp}, guest {_o.GuestIp} ({_o.GuestMac})");
}
