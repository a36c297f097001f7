using System.Buffers.Binary;

namespace Colo.Demo;

/// <summary>
/// The ICMP echo and ARP half of the wire probe, without I/O: builds the echo requests (identifier, sequence number,
/// 56 data bytes derived from a per-run nonce and the sequence number, so a reply's data can be checked without keeping
/// the requests) and the ARP requests, and matches what the capture saw. Thread-safe (the sender and the capture
/// thread call it concurrently). Memory is bounded: at most <see cref="MaxRecords"/> pings and ARP times are kept.
/// </summary>
public sealed class IcmpArpProbe
{
    /// <summary>Bytes of echo data (as <c>ping</c>'s default).</summary>
    public const int EchoDataLength = 56;

    /// <summary>Length of an echo request's ICMP message (header and data).</summary>
    public const int EchoMessageLength = 8 + EchoDataLength;

    /// <summary>Length of the ARP request frame (Ethernet header, ARP, padding to 60 bytes).</summary>
    public const int ArpFrameLength = 60;

    /// <summary>Default of <see cref="MaxRecords"/>.</summary>
    public const int DefaultMaxRecords = 20_000;

    /// <summary>Marks the padding of the probe's own ARP requests (tells them from the kernel's).</summary>
    private static ReadOnlySpan<byte> ArpMarker => "COLOWIRE"u8;

    private readonly Lock _gate = new();
    private readonly WireIcmpResult _icmp;
    private readonly WireArpResult _arp = new();
    private readonly ulong _nonce;

    /// <summary>Creates the probe state.</summary>
    /// <param name="echoId">ICMP echo identifier.</param>
    /// <param name="nonce">Per-run value mixed into the echo data.</param>
    /// <param name="clientIp">The client's IPv4 address (network order in a <see cref="uint"/>).</param>
    /// <param name="clientMac">The client interface's MAC.</param>
    /// <param name="guestIp">The guest's IPv4 address.</param>
    /// <param name="guestMac">The guest's MAC.</param>
    /// <param name="maxRecords">Most pings and ARP times kept (at least 1).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxRecords"/> is less than 1 or more than 65536.</exception>
    public IcmpArpProbe(ushort echoId, ulong nonce, uint clientIp, ulong clientMac, uint guestIp, ulong guestMac, int maxRecords = DefaultMaxRecords)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRecords, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxRecords, 65536);
        EchoId = echoId;
        _nonce = nonce;
        ClientIp = clientIp;
        ClientMac = clientMac;
        GuestIp = guestIp;
        GuestMac = guestMac;
        MaxRecords = maxRecords;
        _icmp = new WireIcmpResult { Id = echoId };
    }

    /// <summary>ICMP echo identifier.</summary>
    public ushort EchoId { get; }

    /// <summary>The client's IPv4 address.</summary>
    public uint ClientIp { get; }

    /// <summary>The client interface's MAC.</summary>
    public ulong ClientMac { get; }

    /// <summary>The guest's IPv4 address.</summary>
    public uint GuestIp { get; }

    /// <summary>The guest's MAC.</summary>
    public ulong GuestMac { get; }

    /// <summary>Most pings (and ARP request and reply times) kept; no ping is sent beyond it.</summary>
    public int MaxRecords { get; }

    /// <summary>Echo requests sent at or after <paramref name="sinceMs"/> and not answered yet.</summary>
    /// <param name="sinceMs">Unix milliseconds.</param>
    /// <returns>The number of such requests.</returns>
    public int UnansweredSince(long sinceMs)
    {
        lock (_gate)
        {
            int n = 0;
            for (int i = _icmp.Pings.Count - 1; i >= 0 && _icmp.Pings[i].SentMs >= sinceMs; i--)
            {
                if (_icmp.Pings[i].ReplyMs is null && _icmp.Pings[i].Ok)
                    n++;
            }
            return n;
        }
    }

    /// <summary>Writes the echo data of request <paramref name="seq"/>.</summary>
    /// <param name="data"><see cref="EchoDataLength"/> bytes.</param>
    /// <param name="nonce">The run's nonce.</param>
    /// <param name="seq">Sequence number.</param>
    public static void FillEchoData(Span<byte> data, ulong nonce, ushort seq)
    {
        BinaryPrimitives.WriteUInt64BigEndian(data, nonce);
        BinaryPrimitives.WriteUInt16BigEndian(data[8..], seq);
        for (int i = 10; i < EchoDataLength; i++)
            data[i] = (byte)(i * 31 + seq * 7 + (int)(nonce >> (i % 8 * 8)));
    }

    /// <summary>Allocates the next echo request: records it as sent at <paramref name="atMs"/> and writes its ICMP message.</summary>
    /// <param name="message">At least <see cref="EchoMessageLength"/> bytes: type 8, code 0, checksum, identifier, sequence number, data.</param>
    /// <param name="atMs">Send time, Unix milliseconds.</param>
    /// <param name="seq">The request's sequence number.</param>
    /// <returns>False (nothing written) when <see cref="MaxRecords"/> pings were already sent.</returns>
    public bool TryNextEchoRequest(Span<byte> message, long atMs, out ushort seq)
    {
        lock (_gate)
        {
            seq = 0;
            if (_icmp.Pings.Count >= MaxRecords)
                return false;
            seq = (ushort)_icmp.Pings.Count;
            _icmp.Pings.Add(new PingRecord { Seq = seq, SentMs = atMs });
            _icmp.Sent++;
        }
        message[..EchoMessageLength].Clear();
        message[0] = 8;
        BinaryPrimitives.WriteUInt16BigEndian(message[4..], EchoId);
        BinaryPrimitives.WriteUInt16BigEndian(message[6..], seq);
        FillEchoData(message.Slice(8, EchoDataLength), _nonce, seq);
        BinaryPrimitives.WriteUInt16BigEndian(message[2..], InternetChecksum(message[..EchoMessageLength]));
        return true;
    }

    /// <summary>Records that echo request <paramref name="seq"/> could not be sent (it then never counts as answered).</summary>
    /// <param name="seq">The request's sequence number.</param>
    public void EchoSendFailed(ushort seq)
    {
        lock (_gate)
        {
            _icmp.SendErrors++;
            if (seq < _icmp.Pings.Count)
                _icmp.Pings[seq].Ok = false;
        }
    }

    /// <summary>Writes a broadcast ARP request "who has the guest's address, tell the client" (padding marked as the probe's).</summary>
    /// <param name="frame">At least <see cref="ArpFrameLength"/> bytes.</param>
    public void BuildArpRequest(Span<byte> frame)
    {
        frame[..ArpFrameLength].Clear();
        WireFrame.WriteMac(frame, 0xFFFF_FFFF_FFFF);
        WireFrame.WriteMac(frame[6..], ClientMac);
        BinaryPrimitives.WriteUInt16BigEndian(frame[12..], 0x0806);
        Span<byte> arp = frame[14..];
        BinaryPrimitives.WriteUInt16BigEndian(arp, 1);
        BinaryPrimitives.WriteUInt16BigEndian(arp[2..], 0x0800);
        arp[4] = 6;
        arp[5] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(arp[6..], 1);
        WireFrame.WriteMac(arp[8..], ClientMac);
        BinaryPrimitives.WriteUInt32BigEndian(arp[14..], ClientIp);
        BinaryPrimitives.WriteUInt32BigEndian(arp[24..], GuestIp);
        ArpMarker.CopyTo(frame[42..]);
    }

    /// <summary>Records the result of sending one of the probe's ARP requests.</summary>
    /// <param name="atMs">Send time, Unix milliseconds.</param>
    /// <param name="sent">False when the socket refused it.</param>
    public void ArpRequestSent(long atMs, bool sent)
    {
        lock (_gate)
        {
            if (!sent)
            {
                _arp.ProbeSendErrors++;
                return;
            }
            _arp.ProbesSent++;
            if (_arp.RequestMs.Count < MaxRecords)
                _arp.RequestMs.Add(atMs);
        }
    }

    /// <summary>Matches one captured frame: echo requests and replies of this probe, ARP to and from the guest's address.</summary>
    /// <param name="f">The parsed frame.</param>
    /// <param name="frame">Its captured bytes (for the echo data and the ARP padding).</param>
    /// <param name="atMs">Capture time, Unix milliseconds.</param>
    public void OnFrame(in WireFrame f, ReadOnlySpan<byte> frame, long atMs)
    {
        if (f.Kind == WireFrameKind.IcmpEcho)
            OnEcho(f, frame, atMs);
        else if (f.Kind == WireFrameKind.Arp)
            OnArp(f, frame, atMs);
    }

    private void OnEcho(in WireFrame f, ReadOnlySpan<byte> frame, long atMs)
    {
        if (f.IcmpId != EchoId)
            return;
        lock (_gate)
        {
            if (f.IcmpType == 8 && f.SrcIp == ClientIp && f.DstIp == GuestIp)
            {
                _icmp.RequestsOnWire++;
                return;
            }
            if (f.IcmpType != 0 || f.SrcIp != GuestIp || f.DstIp != ClientIp)
                return;
            if (f.SrcMac != GuestMac)
                _icmp.WrongMac++;
            if (f.IcmpSeq >= _icmp.Pings.Count)
            {
                _icmp.UnmatchedReplies++;
                return;
            }
            PingRecord ping = _icmp.Pings[f.IcmpSeq];
            if (ping.ReplyMs is not null)
            {
                _icmp.DuplicateReplies++;
                return;
            }
            ping.ReplyMs = atMs;
            Span<byte> expected = stackalloc byte[EchoDataLength];
            FillEchoData(expected, _nonce, f.IcmpSeq);
            bool same = f.IcmpDataLength == EchoDataLength && f.IcmpDataOffset + EchoDataLength <= frame.Length &&
                        frame.Slice(f.IcmpDataOffset, EchoDataLength).SequenceEqual(expected);
            if (!same)
            {
                ping.Ok = false;
                _icmp.PayloadMismatches++;
            }
        }
    }

    private void OnArp(in WireFrame f, ReadOnlySpan<byte> frame, long atMs)
    {
        lock (_gate)
        {
            if (f.ArpSenderIp == GuestIp)
            {
                if (f.ArpSenderMac != GuestMac || f.SrcMac != GuestMac)
                    _arp.WrongMac++;
                if (f.ArpTargetIp == GuestIp)
                {
                    _arp.Gratuitous++;
                }
                else if (f.ArpOp == 2 && f.ArpTargetIp == ClientIp)
                {
                    _arp.Replies++;
                    if (_arp.ReplyMs.Count < MaxRecords)
                        _arp.ReplyMs.Add(atMs);
                }
                return;
            }
            if (f.ArpOp == 1 && f.ArpSenderIp == ClientIp && f.ArpTargetIp == GuestIp)
            {
                // The probe's own requests are counted when sent (a packet socket does not see its own frames, but be sure).
                bool ours = frame.Length >= 42 + ArpMarker.Length && frame.Slice(42, ArpMarker.Length).SequenceEqual(ArpMarker);
                if (ours)
                    return;
                _arp.KernelRequests++;
                if (_arp.RequestMs.Count < MaxRecords)
                    _arp.RequestMs.Add(atMs);
            }
        }
    }

    /// <summary>A copy of the ICMP results so far.</summary>
    /// <returns>The results (the ping records are copied).</returns>
    public WireIcmpResult IcmpResult()
    {
        lock (_gate)
        {
            return new WireIcmpResult
            {
                Id = _icmp.Id,
                Sent = _icmp.Sent,
                SendErrors = _icmp.SendErrors,
                RequestsOnWire = _icmp.RequestsOnWire,
                DuplicateReplies = _icmp.DuplicateReplies,
                UnmatchedReplies = _icmp.UnmatchedReplies,
                PayloadMismatches = _icmp.PayloadMismatches,
                WrongMac = _icmp.WrongMac,
                Pings = _icmp.Pings.Select(p => new PingRecord { Seq = p.Seq, SentMs = p.SentMs, ReplyMs = p.ReplyMs, Ok = p.Ok }).ToList(),
            };
        }
    }

    /// <summary>A copy of the ARP results so far.</summary>
    /// <returns>The results.</returns>
    public WireArpResult ArpResult()
    {
        lock (_gate)
        {
            return new WireArpResult
            {
                ProbesSent = _arp.ProbesSent,
                ProbeSendErrors = _arp.ProbeSendErrors,
                KernelRequests = _arp.KernelRequests,
                Replies = _arp.Replies,
                WrongMac = _arp.WrongMac,
                Gratuitous = _arp.Gratuitous,
                RequestMs = [.. _arp.RequestMs],
                ReplyMs = [.. _arp.ReplyMs],
            };
        }
    }

    /// <summary>The Internet checksum (RFC 1071) of <paramref name="data"/>.</summary>
    /// <param name="data">The bytes (the checksum field zero).</param>
    /// <returns>The checksum.</returns>
    public static ushort InternetChecksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        int i = 0;
        for (; i + 1 < data.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if (i < data.Length)
            sum += (uint)data[i] << 8;
        while (sum >> 16 != 0)
            sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }
}
