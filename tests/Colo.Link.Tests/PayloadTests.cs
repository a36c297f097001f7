using System.Buffers;
using System.Text;

namespace Colo.Link.Tests;

public sealed class PayloadTests
{
    [Fact]
    public void Hello_RoundTrips()
    {
        var hello = new LinkHello("primary", "redis-vm", 256L * 1024 * 1024, "sha256:abc");
        byte[] bytes = LinkHello.Encode(hello);

        Assert.Equal(hello, LinkHello.Decode(bytes));
        Assert.Contains("\"vmName\":\"redis-vm\"", Encoding.UTF8.GetString(bytes));
    }

    [Theory]
    [InlineData("")]
    [InlineData("not json")]
    [InlineData("{\"role\":\"primary\"}")]
    [InlineData("{\"role\":null,\"vmName\":\"v\",\"memoryBytes\":1,\"configHash\":\"h\"}")]
    [InlineData("{\"role\":\"p\",\"vmName\":\"v\",\"memoryBytes\":\"x\",\"configHash\":\"h\"}")]
    public void Hello_Undecodable_ThrowsProtocolException(string json)
    {
        Assert.Throws<LinkProtocolException>(() => LinkHello.Decode(Encoding.UTF8.GetBytes(json)));
    }

    [Fact]
    public void Goodbye_RoundTripsAndTruncatesOnCharBoundary()
    {
        Assert.Equal("shutting down ✓", LinkGoodbye.Decode(new ReadOnlySequence<byte>(LinkGoodbye.Encode("shutting down ✓"))));

        byte[] longReason = LinkGoodbye.Encode(new string('é', 5000));
        Assert.True(longReason.Length <= LinkGoodbye.MaxReasonBytes);
        Assert.Equal(new string('é', longReason.Length / 2), LinkGoodbye.Decode(new ReadOnlySequence<byte>(longReason)));
    }

    [Fact]
    public void Goodbye_InvalidUtf8_ThrowsProtocolException()
    {
        Assert.Throws<LinkProtocolException>(() => LinkGoodbye.Decode(new ReadOnlySequence<byte>(new byte[] { 0xFF, 0xFE })));
    }
}
