using System.Buffers;
using Colo.Link.Tests.Support;

namespace Colo.Link.Tests;

public sealed class FramingTests
{
    public static TheoryData<MessageType> AllTypes()
    {
        var data = new TheoryData<MessageType>();
        foreach (MessageType t in Enum.GetValues<MessageType>())
        {
            data.Add(t);
        }

        return data;
    }

    private static byte[] Frame(MessageType type, ulong epoch, byte[] payload)
    {
        var bytes = new byte[LinkFraming.HeaderSize + payload.Length];
        LinkFraming.WriteHeader(bytes, type, epoch, payload.Length);
        payload.CopyTo(bytes, LinkFraming.HeaderSize);
        return bytes;
    }

    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public void WriteHeader_Layout_IsBigEndian()
    {
        var header = new byte[16];
        LinkFraming.WriteHeader(header, MessageType.CheckpointPages, 0x0102030405060708UL, 0x00A0B0C0);
        Assert.Equal(
            new byte[] { 0xC0, 0x1A, 0x01, 0x06, 0x00, 0xA0, 0xB0, 0xC0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08 },
            header);
    }

    [Theory]
    [MemberData(nameof(AllTypes))]
    public void TryReadMessage_EveryType_RoundTrips(MessageType type)
    {
        foreach (int length in new[] { 0, 1, 1000 })
        {
            byte[] payload = Pattern(length, (int)type);
            ulong epoch = ulong.MaxValue - (ulong)type;
            var buffer = new ReadOnlySequence<byte>(Frame(type, epoch, payload));

            Assert.True(LinkFraming.TryReadMessage(ref buffer, out MessageHeader header, out ReadOnlySequence<byte> read));

            Assert.Equal(new MessageHeader(type, epoch, length), header);
            Assert.Equal(payload, read.ToArray());
            Assert.True(buffer.IsEmpty);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(15)]
    public void TryReadMessage_HeaderIncomplete_ReturnsFalseAndLeavesBuffer(int available)
    {
        byte[] frame = Frame(MessageType.Heartbeat, 7, []);
        var buffer = new ReadOnlySequence<byte>(frame, 0, available);
        ReadOnlySequence<byte> before = buffer;

        Assert.False(LinkFraming.TryReadMessage(ref buffer, out _, out _));

        Assert.Equal(before.Start, buffer.Start);
        Assert.Equal(before.End, buffer.End);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(515)]
    public void TryReadMessage_PayloadIncomplete_ReturnsFalseAndLeavesBuffer(int available)
    {
        byte[] frame = Frame(MessageType.ClientFrame, 7, Pattern(500, 1));
        var buffer = Segments.Split(frame.AsSpan(0, available).ToArray(), 7);
        ReadOnlySequence<byte> before = buffer;

        Assert.False(LinkFraming.TryReadMessage(ref buffer, out _, out _));

        Assert.Equal(before.Start, buffer.Start);
        Assert.Equal(before.End, buffer.End);
    }

    [Fact]
    public void TryReadMessage_BadMagic_Throws()
    {
        byte[] frame = Frame(MessageType.Heartbeat, 1, []);
        frame[0] = 0x12;
        var buffer = new ReadOnlySequence<byte>(frame);

        var ex = Assert.Throws<LinkProtocolException>(() => LinkFraming.TryReadMessage(ref buffer, out _, out _));
        Assert.Contains("magic", ex.Reason);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(255)]
    public void TryReadMessage_UnknownVersion_Throws(byte version)
    {
        byte[] frame = Frame(MessageType.Heartbeat, 1, []);
        frame[2] = version;
        var buffer = new ReadOnlySequence<byte>(frame);

        var ex = Assert.Throws<LinkProtocolException>(() => LinkFraming.TryReadMessage(ref buffer, out _, out _));
        Assert.Contains("version", ex.Reason);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(16)]
    [InlineData(255)]
    public void TryReadMessage_UnknownType_Throws(byte type)
    {
        byte[] frame = Frame(MessageType.Heartbeat, 1, []);
        frame[3] = type;
        var buffer = new ReadOnlySequence<byte>(frame);

        var ex = Assert.Throws<LinkProtocolException>(() => LinkFraming.TryReadMessage(ref buffer, out _, out _));
        Assert.Contains("type", ex.Reason);
    }

    [Theory]
    [InlineData(LinkFraming.MaxPayloadLength + 1u)]
    [InlineData(uint.MaxValue)]
    public void TryReadMessage_OversizedPayload_ThrowsBeforePayloadArrives(uint length)
    {
        byte[] frame = Frame(MessageType.CheckpointPages, 1, []);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(4), length);
        var buffer = new ReadOnlySequence<byte>(frame);

        var ex = Assert.Throws<LinkProtocolException>(() => LinkFraming.TryReadMessage(ref buffer, out _, out _));
        Assert.Contains("exceeds", ex.Reason);
    }

    [Fact]
    public void TryReadMessage_MaxPayload_Accepted()
    {
        byte[] frame = Frame(MessageType.CheckpointPages, 3, new byte[LinkFraming.MaxPayloadLength]);
        var buffer = new ReadOnlySequence<byte>(frame);

        Assert.True(LinkFraming.TryReadMessage(ref buffer, out MessageHeader header, out ReadOnlySequence<byte> payload));
        Assert.Equal(LinkFraming.MaxPayloadLength, header.PayloadLength);
        Assert.Equal(LinkFraming.MaxPayloadLength, payload.Length);
    }

    [Fact]
    public void TryReadMessage_ManyMessagesInOneBuffer_ReadsAllInOrder()
    {
        var all = new List<byte>();
        var expected = new List<(MessageType, ulong, byte[])>();
        for (int i = 0; i < 100; i++)
        {
            var type = (MessageType)(1 + (i % 11));
            byte[] payload = Pattern(i * 3, i);
            expected.Add((type, (ulong)i, payload));
            all.AddRange(Frame(type, (ulong)i, payload));
        }

        all.AddRange(Frame(MessageType.Heartbeat, 999, [1, 2, 3]).AsSpan(0, 10).ToArray()); // trailing partial header
        var buffer = new ReadOnlySequence<byte>(all.ToArray());

        foreach ((MessageType type, ulong epoch, byte[] payload) in expected)
        {
            Assert.True(LinkFraming.TryReadMessage(ref buffer, out MessageHeader header, out ReadOnlySequence<byte> read));
            Assert.Equal(type, header.Type);
            Assert.Equal(epoch, header.Epoch);
            Assert.Equal(payload, read.ToArray());
        }

        Assert.False(LinkFraming.TryReadMessage(ref buffer, out _, out _));
        Assert.Equal(10, buffer.Length);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(4096)]
    public void TryReadMessage_MultiSegmentSequence_ReadsAll(int segmentSize)
    {
        var all = new List<byte>();
        for (int i = 0; i < 20; i++)
        {
            all.AddRange(Frame(MessageType.SvmFrame, (ulong)i, Pattern(37 * i, i)));
        }

        ReadOnlySequence<byte> buffer = Segments.Split(all.ToArray(), segmentSize);
        for (int i = 0; i < 20; i++)
        {
            Assert.True(LinkFraming.TryReadMessage(ref buffer, out MessageHeader header, out ReadOnlySequence<byte> payload));
            Assert.Equal((ulong)i, header.Epoch);
            Assert.Equal(Pattern(37 * i, i), payload.ToArray());
        }

        Assert.True(buffer.IsEmpty);
    }

    [Fact]
    public void TryReadMessage_HeaderSplitAcrossSegments_Reads()
    {
        byte[] frame = Frame(MessageType.CheckpointEnd, 42, Pattern(10, 5));
        ReadOnlySequence<byte> buffer = Segments.SplitAt(frame, 2, 3, 9, 16, 20);

        Assert.True(LinkFraming.TryReadMessage(ref buffer, out MessageHeader header, out ReadOnlySequence<byte> payload));
        Assert.Equal(new MessageHeader(MessageType.CheckpointEnd, 42, 10), header);
        Assert.Equal(Pattern(10, 5), payload.ToArray());
    }

    [Fact]
    public void WriteHeader_InvalidArguments_Throw()
    {
        var header = new byte[16];
        Assert.Throws<ArgumentOutOfRangeException>(() => LinkFraming.WriteHeader(header, MessageType.Hello, 0, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => LinkFraming.WriteHeader(header, MessageType.Hello, 0, LinkFraming.MaxPayloadLength + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => LinkFraming.WriteHeader(header, (MessageType)0, 0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => LinkFraming.WriteHeader(header, (MessageType)16, 0, 0));
        Assert.Throws<ArgumentException>(() => LinkFraming.WriteHeader(new byte[15], MessageType.Hello, 0, 0));
    }
}
